"""The online store: Redis reads and writes of the service, with time-outs and a back-off.

Every call has a time-out (`StoreSettings.timeout_ms`, per round trip) and no retry: a failed or
slow call raises `StoreUnavailable` at once, and the store then answers `StoreUnavailable`
without touching Redis for `backoff_ms`, so a dead Redis costs requests nothing while it is down.
The first call after the back-off probes Redis again: the service recovers by itself.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mic_tf.serving.errors import StoreUnavailable
from mic_tf.serving.keys import Keys

_FAILURES = (redis.RedisError, OSError)

# The two reads of a recommend as Lua scripts: one command per round trip instead of ~45
# pipelined ones (redis-py spends ~10 us of Python per command), and a consistent snapshot.
READ_USER = """
return {redis.call('EXISTS', KEYS[1]), redis.call('GET', KEYS[2]),
        redis.call('LRANGE', KEYS[3], 0, -1), redis.call('GET', KEYS[4])}
"""
# ARGV[1] = n users; KEYS = n history keys, n event keys, then the items' similar-item keys.
READ_NEIGHBOURHOOD = """
local n = tonumber(ARGV[1])
local histories, events, items = {}, {}, {}
for i = 1, n do
  histories[i] = redis.call('GET', KEYS[i])
  events[i] = redis.call('LRANGE', KEYS[n + i], 0, -1)
end
for i = 2 * n + 1, #KEYS do
  items[#items + 1] = redis.call('GET', KEYS[i])
end
return {histories, events, items}
"""


@dataclasses.dataclass
class StoreSettings:
    """Redis connection settings (time-outs in milliseconds)."""

    url: str = "redis://127.0.0.1:6379/0"
    timeout_ms: float = 50.0  # a command / pipeline round trip
    connect_timeout_ms: float = 50.0
    backoff_ms: float = 500.0  # after a failure, answer "unavailable" without trying this long
    max_connections: int = 64

    def validate(self) -> None:
        for name in ("timeout_ms", "connect_timeout_ms"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.backoff_ms < 0 or self.max_connections < 1:
            raise ValueError("backoff_ms must be >= 0 and max_connections >= 1")


@dataclasses.dataclass
class UserRecord:
    """One user's online data: `ready` (the version is loaded), the bundle history (int32
    bytes or None), the click events (list of bytes) and the similar users (bytes or None)."""

    ready: bool
    history: bytes | None
    events: list
    similar_users: bytes | None


def connect(settings: StoreSettings) -> redis.Redis:
    """A client with the settings' time-outs and NO retry (redis-py retries by default)."""
    settings.validate()
    pool = redis.BlockingConnectionPool.from_url(
        settings.url, max_connections=settings.max_connections,
        timeout=settings.timeout_ms / 1000, socket_timeout=settings.timeout_ms / 1000,
        socket_connect_timeout=settings.connect_timeout_ms / 1000, retry=Retry(NoBackoff(), 0),
        health_check_interval=0)
    return redis.Redis(connection_pool=pool)


class OnlineStore:
    """The service's Redis calls. Thread-safe (one client, a pool of connections).

    Args:
      settings: `StoreSettings`.
      on_error: called with the exception of every failed call (metrics).
    """

    def __init__(self, settings: StoreSettings, on_error=None):
        self.settings = settings
        self.client = connect(settings)
        self._read_user = self.client.register_script(READ_USER)  # EVALSHA, reloaded if missing
        self._read_neighbourhood = self.client.register_script(READ_NEIGHBOURHOOD)
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._on_error = on_error or (lambda e: None)
        self.last_error: str | None = None

    @property
    def retry_after_s(self) -> int:
        """Seconds a client should wait before retrying a refused write (>= 1)."""
        return max(1, int(-(-self.settings.backoff_ms // 1000)))

    def available(self) -> bool:
        """False during the back-off after a failure."""
        return time.monotonic() >= self._down_until

    def _run(self, fn):
        if not self.available():
            raise StoreUnavailable(f"Redis unavailable (backing off after: {self.last_error})")
        try:
            out = fn()
        except _FAILURES as e:
            with self._lock:
                self._down_until = time.monotonic() + self.settings.backoff_ms / 1000
                self.last_error = f"{type(e).__name__}: {e}"
            self._on_error(e)
            # Drop every idle pooled socket: after a restart they are all dead, and each would
            # fail once more after the back-off. Not the ones other threads are using: closing
            # a socket under a thread that is reading from it broke that request with an
            # exception outside _FAILURES (HTTP 500s when concurrent calls timed out); a dead
            # one fails on its own and redis-py drops it.
            self.client.connection_pool.disconnect(inuse_connections=False)
            raise StoreUnavailable(f"Redis call failed: {self.last_error}") from e
        return out

    def read_user(self, keys: Keys, user: str) -> UserRecord:
        """One round trip: the version's ready flag, the user's history, events, similar users."""
        names = [keys.ready, keys.history(user), keys.events(user), keys.similar_users(user)]
        ready, history, events, similar = self._run(lambda: self._read_user(keys=names))
        if not ready:
            raise StoreUnavailable(f"Redis does not hold bundle version {keys.version} (run "
                                   f"`python -m mic_tf.serving load` for it)")
        return UserRecord(True, history, events, similar)

    def read_neighbourhood(self, keys: Keys, users: list, items: list):
        """One round trip: the listed users' histories and events, and the listed items'
        similar items. Returns `(histories, events, similar_items)`, lists in input order."""
        if not users and not items:
            return [], [], []
        names = ([keys.history(u) for u in users] + [keys.events(u) for u in users]
                 + [keys.similar_items(i) for i in items])
        histories, events, similar = self._run(lambda: self._read_neighbourhood(
            keys=names, args=[len(users)]))
        # Lua drops trailing nils from a table: pad the lists back to their lengths
        return (histories + [None] * (len(users) - len(histories)), events,
                similar + [None] * (len(items) - len(similar)))

    def append_event(self, keys: Keys, user: str, entry: str, cap: int) -> int:
        """Appends one click to the user's event list (capped at `cap`, atomically: MULTI) and
        returns its length. Raises StoreUnavailable unless Redis confirmed the write."""
        def call():
            pipe = self.client.pipeline(transaction=True)
            pipe.rpush(keys.events(user), entry)
            pipe.ltrim(keys.events(user), -cap, -1)
            return pipe.execute()[0]
        return min(int(self._run(call)), cap)

    def is_ready(self, keys: Keys) -> bool:
        return bool(self._run(lambda: self.client.exists(keys.ready)))

    def set_active(self, keys: Keys) -> None:
        self._run(lambda: self.client.set(keys.active, keys.version))

    def ping(self) -> bool:
        try:
            return bool(self._run(self.client.ping))
        except StoreUnavailable:
            return False
