"""The HTTP service (FastAPI; run by uvicorn): versioned routes over one `ServingModel` at a time.

    POST /v1/recommend     {"user_id": ..., "n": 200} or {"history": [raw item ids], "n": ...}
    POST /v1/events        {"user_id", "item_id", "timestamp"}        (API key when one is set)
    POST /v1/admin/reload  {"bundle_dir": ...}                         (API key when one is set)
    GET  /healthz, GET /metrics (Prometheus text), GET /openapi.json, GET /docs

`recommend` runs on the event loop's thread (`inline_recommend`, the default; BUILD_NOTES says
why), the other routes are plain functions run by FastAPI in its thread pool. A request takes
the model it starts with (`state.model`), so a reload swaps one reference and requests in
flight finish on the old bundle. With `serve --workers=N` each worker process runs this app;
`workers.py` carries a reload to all of them (`state_dir`).
"""

# No `from __future__ import annotations`: FastAPI must resolve the request models, which are
# local to `_models`, from the route functions' real annotations.
import contextlib
import dataclasses
import json
import os
import threading
import time

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

import orjson

from mic_tf.errors import MicError
from mic_tf.serving.bundle import Bundle
from mic_tf.serving.engine import Recommender, ServingModel
from mic_tf.serving.errors import StoreUnavailable, UnknownIdsError
from mic_tf.serving.keys import Keys, encode_event
from mic_tf.serving.metrics import Metrics
from mic_tf.serving.security import key_matches
from mic_tf.serving.store import OnlineStore, StoreSettings
from mic_tf.serving.workers import SETTINGS_ENV, STATE_ENV, ReloadBusy, WorkerSync

ROUTES = ("/v1/recommend", "/v1/events", "/v1/admin/reload", "/healthz", "/metrics")


@dataclasses.dataclass
class ServingSettings:
    """Everything `create_app` needs (the CLI fills it from flags).

    Attributes:
      bundle_dir: the bundle served at start.
      store: Redis settings (time-outs in ms).
      prefix: Redis key prefix.
      api_key: required on events and admin routes when set (header `X-API-Key`).
      max_n: largest `n`; max_history: longest `history`; max_body_bytes: request body limit.
      default_n: `n` when a request gives none (None: the bundle's `top_n`).
      faiss_threads / tf_intra_threads / tf_inter_threads: thread pools (1 suits batch-1
        requests served from several threads).
      inline_recommend: run recommend on the event loop's thread instead of FastAPI's thread
        pool (BUILD_NOTES, Serving: the hand-off's two cross-thread wake-ups cost more GIL time
        than the Redis, tower and Faiss waits it lets other requests use; the processes of
        `--workers` are the parallelism).
      state_dir: the folder the workers of `serve --workers=N` share (`workers.py`); None for
        one process.
      sync_poll_s: how often a worker reads the shared reload state.
      reload_prepare_timeout_s: how long a reload waits for every worker to load the bundle.
    """

    bundle_dir: str
    store: StoreSettings = dataclasses.field(default_factory=StoreSettings)
    prefix: str = "mic"
    api_key: str | None = None
    max_n: int = 1000
    max_history: int = 1000
    max_body_bytes: int = 65536
    default_n: int | None = None
    faiss_threads: int = 1
    tf_intra_threads: int = 1
    tf_inter_threads: int = 2
    inline_recommend: bool = True
    state_dir: str | None = None
    sync_poll_s: float = 0.2
    reload_prepare_timeout_s: float = 900.0

    def to_json(self) -> str:
        """For the worker processes (the API key is not in it: they read $MIC_API_KEY)."""
        values = dataclasses.asdict(self)
        values.pop("api_key")
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str, api_key: str | None = None) -> "ServingSettings":
        values = json.loads(text)
        values["store"] = StoreSettings(**values["store"])
        return cls(**values, api_key=api_key)


def _models(settings: ServingSettings):
    """Request models with the settings' bounds (so the OpenAPI schema states them)."""
    config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    Id = Field(min_length=1, max_length=256)

    class RecommendRequest(BaseModel):
        """Exactly one of `user_id` (a known or new user; the history is read from Redis) and
        `history` (raw item ids, oldest first)."""
        model_config = config
        user_id: str | None = Field(None, min_length=1, max_length=256)
        history: list[str] | None = Field(None, max_length=settings.max_history)
        n: int | None = Field(None, ge=1, le=settings.max_n,
                              description="Items to return (default: the bundle's top_n).")

        @model_validator(mode="after")
        def _one_of(self):
            if (self.user_id is None) == (self.history is None):
                raise ValueError("give exactly one of user_id and history")
            return self

    class Event(BaseModel):
        """A click: appended to the user's history in Redis before the answer."""
        model_config = config
        user_id: str = Id
        item_id: str = Id
        timestamp: float | None = Field(None, ge=0, le=1e11, allow_inf_nan=False,
                                        description="Unix seconds (default: now).")

    class ReloadRequest(BaseModel):
        model_config = config
        bundle_dir: str = Field(min_length=1, max_length=4096)

    class Item(BaseModel):
        item_id: str
        score: float
        channels: list[str]

    class RecommendResponse(BaseModel):
        version: str
        items: list[Item]
        degraded: list[str] = Field(description="Channels left out (Redis unavailable).")
        fallback: str | None = Field(description='"popular" when the user has no history.')
        history_length: int
        timings_ms: dict[str, float]

    class EventResponse(BaseModel):
        user_id: str
        item_id: str
        events: int = Field(description="Events now held for the user (capped at H).")

    class ReloadResponse(BaseModel):
        version: str
        previous: str
        seconds: float
        workers: dict[str, str] | None = Field(None, description="With several workers: each "
                                               "live worker's version (pid -> version).")
        all_switched: bool | None = None

    return (RecommendRequest, Event, ReloadRequest, RecommendResponse, EventResponse,
            ReloadResponse)


class AppState:
    """The served model, the store and the metrics; `swap` replaces the model atomically.
    `sync` (a `WorkerSync`, with `settings.state_dir`) shares reloads with the other workers."""

    def __init__(self, settings: ServingSettings, model: ServingModel | None = None):
        self.settings = settings
        self.metrics = Metrics()
        self.store = OnlineStore(settings.store, on_error=self.metrics.redis_error)
        self.recommender = Recommender(self.store, self.metrics, settings.faiss_threads)
        self.reload_lock = threading.Lock()
        self.sync = None
        bundle_dir = settings.bundle_dir
        if settings.state_dir:
            self.sync = WorkerSync(settings.state_dir, self, self.load_model,
                                   poll_s=settings.sync_poll_s)
            bundle_dir = self.sync.start_bundle(bundle_dir)  # a worker started after a reload
        self.model = model or ServingModel(Bundle(bundle_dir), settings.prefix)
        self.model.warm_up()
        self.metrics.set_version(self.model.version)
        self._announce()
        if self.sync is not None:
            self.sync.start()

    def load_model(self, bundle_dir: str) -> ServingModel:
        model = ServingModel(Bundle(bundle_dir), self.settings.prefix)
        model.warm_up()
        return model

    def _announce(self) -> None:
        try:
            self.store.set_active(self.model.keys)
        except StoreUnavailable:
            pass  # informational (drop's guard); set again on the next reload

    def swap(self, model: ServingModel) -> str:
        previous, self.model = self.model.version, model
        self.metrics.set_version(model.version)
        self._announce()
        return previous


def _error(status: int, message: str, headers=None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and not (content_type == "application/json"
                                         or content_type.endswith("+json")):
        # FastAPI only parses JSON bodies sent as JSON; say so instead of "not an object".
        return _error(415, f"send the body as JSON with Content-Type: application/json (got "
                           f"{content_type or 'no Content-Type'!r})")
    if any(e.get("type") == "json_invalid" for e in errors):
        e = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (e.get("ctx") or {}).get("error", e.get("msg"))
        return _error(400, f"the request body is not valid JSON ({reason})")
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    detail = [{"loc": list(map(str, e.get("loc", ()))), "msg": str(e.get("msg")),
               "type": str(e.get("type"))} for e in errors]
    return _error(422, "invalid request: " + "; ".join(parts), detail=detail)


class BodyLimit:
    """ASGI middleware: bodies over `limit` bytes get 413 (Content-Length checked up front,
    chunked bodies counted as they arrive)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._reject(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # FastAPI turns other exceptions here into a 400
                    raise StarletteHTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)

    async def _reject(self, send):
        body = json.dumps({"error": f"request body over {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """ASGI middleware: request count by route and status, and time in the app by route."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("path") if scope.get("path") in ROUTES else "other"
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


def create_app(settings: ServingSettings, model: ServingModel | None = None) -> FastAPI:
    """The FastAPI app over `settings.bundle_dir` (or an already loaded `model`)."""
    import faiss

    from mic_tf.serving.tower import configure_threads

    faiss.omp_set_num_threads(settings.faiss_threads)
    configure_threads(settings.tf_intra_threads, settings.tf_inter_threads)  # before the tower
    state = AppState(settings, model)
    (RecommendRequest, Event, ReloadRequest, RecommendResponse, EventResponse,
     ReloadResponse) = _models(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if state.sync is not None:
            state.sync.stop()
        state.metrics.process_exit()

    app = FastAPI(title="mic-tf serving", version="1", lifespan=lifespan,
                  description="MIC cross-channel retrieval (U2I + U2U + I2I) over Redis and "
                              "Faiss; paper section 2.9.")
    app.state.mic = state
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, lambda request, exc: _error(
        exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)))
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=state.metrics)  # outermost: sees the 413s too
    if state.sync is not None:
        app.add_middleware(WorkerHeader)
    header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def require_key(key: str | None = Depends(header)):
        if not key_matches(key, settings.api_key):
            raise _Unauthorised()

    @app.exception_handler(_Unauthorised)
    def _unauthorised(request, exc):
        return _error(401, "missing or wrong X-API-Key header")

    recommend_route = app.post("/v1/recommend", response_model=RecommendResponse,
                               responses={422: {"description": "invalid request or unknown "
                                                               "item ids"}})

    def recommend(body: RecommendRequest):
        """Ranked raw item ids with their scores and the channels that retrieved each."""
        model = state.model  # this request's bundle, whatever a reload does meanwhile
        n = body.n or settings.default_n or model.config.top_n
        try:
            rec = state.recommender.recommend(model, min(n, settings.max_n),
                                              user_id=body.user_id, history=body.history)
        except UnknownIdsError as e:
            return _error(422, str(e), unknown_item_ids=e.ids)
        # orjson: ~20x faster than json.dumps on N = 200 item dicts (~1 ms saved per request)
        return Response(orjson.dumps(rec.as_dict()), media_type="application/json")

    if settings.inline_recommend:
        async def recommend_inline(body: RecommendRequest):
            return recommend(body)  # on the event loop's thread: no hand-off to the pool
        recommend_inline.__doc__ = recommend.__doc__
        recommend_route(recommend_inline)
    else:
        recommend_route(recommend)

    @app.post("/v1/events", response_model=EventResponse, dependencies=[Depends(require_key)],
              responses={401: {"description": "API key missing or wrong"},
                         422: {"description": "invalid event or unknown item id"},
                         503: {"description": "Redis unavailable: retry after Retry-After"}})
    def events(body: Event):
        """Appends a click to the user's history (Redis); the next recommend reflects it."""
        model = state.model
        if body.item_id not in model.item_index:
            state.metrics.events.labels("unknown_item").inc()
            return _error(422, f"unknown item ids: {body.item_id!r}",
                          unknown_item_ids=[body.item_id])
        ts = time.time() if body.timestamp is None else body.timestamp
        try:
            held = state.store.append_event(model.keys, body.user_id,
                                            encode_event(ts, body.item_id), model.cap)
        except StoreUnavailable as e:
            state.metrics.events.labels("unavailable").inc()
            return _error(503, f"event not stored, retry later: {e}",
                          headers={"Retry-After": str(state.store.retry_after_s)})
        state.metrics.events.labels("stored").inc()
        return JSONResponse({"user_id": body.user_id, "item_id": body.item_id, "events": held})

    @app.post("/v1/admin/reload", response_model=ReloadResponse,
              dependencies=[Depends(require_key)],
              responses={400: {"description": "not a bundle"},
                         401: {"description": "API key missing or wrong"},
                         409: {"description": "a reload is running, or the version is not "
                                              "loaded in Redis"},
                         503: {"description": "Redis unavailable"}})
    def reload(body: ReloadRequest):
        """Loads a bundle beside the served one and switches to it atomically."""
        if not state.reload_lock.acquire(blocking=False):
            return _error(409, "another reload is running")
        try:
            return _reload(state, body.bundle_dir)
        finally:
            state.reload_lock.release()

    @app.get("/healthz")
    def healthz():
        """Liveness (always 200 while a bundle is served) and readiness details."""
        model = state.model
        try:
            ready = state.store.is_ready(model.keys)
            redis_state = "up"
        except StoreUnavailable:
            ready, redis_state = False, "down"
        out = {"status": "ok" if ready else "degraded", "version": model.version,
               "redis": redis_state, "version_loaded": ready}
        if state.sync is not None:  # this worker, and every live worker's version
            out["worker"] = os.getpid()
            out["workers"] = {str(p): w["version"] for p, w in state.sync.workers().items()}
        return out

    @app.get("/metrics")
    def metrics():
        """Prometheus text format (with several workers: their sum, `mic_bundle_info` per pid)."""
        if state.sync is not None:
            state.sync.workers()  # forgets killed workers' version series
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


class _Unauthorised(Exception):
    pass


class WorkerHeader:
    """ASGI middleware: `X-Mic-Worker: PID` on every answer (several workers only)."""

    def __init__(self, app):
        self.app, self.header = app, (b"x-mic-worker", str(os.getpid()).encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_header(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, with_header)


def app_from_environment() -> FastAPI:
    """uvicorn's factory in each worker of `serve --workers=N`: the settings from
    $MIC_SERVE_SETTINGS, the API key from $MIC_API_KEY, the state folder from
    $MIC_SERVE_STATE_DIR."""
    settings = ServingSettings.from_json(os.environ[SETTINGS_ENV],
                                         api_key=os.environ.get("MIC_API_KEY") or None)
    settings.state_dir = os.environ[STATE_ENV]
    return create_app(settings)


def _reload(state: AppState, bundle_dir: str) -> JSONResponse:
    start = time.perf_counter()
    try:
        bundle = Bundle(bundle_dir)
    except (MicError, OSError, ValueError) as e:  # ValueError: a path with a NUL byte
        state.metrics.reloads.labels("bad_bundle").inc()
        return _error(400, str(e))
    old = state.model
    if bundle.version != old.version:
        try:
            ready = state.store.is_ready(Keys(state.settings.prefix, bundle.version))
        except StoreUnavailable as e:
            state.metrics.reloads.labels("redis_unavailable").inc()
            return _error(503, f"cannot check the new version in Redis: {e}",
                          headers={"Retry-After": str(state.store.retry_after_s)})
        if not ready:
            state.metrics.reloads.labels("not_loaded").inc()
            return _error(409, f"bundle version {bundle.version} is not loaded in Redis: run "
                               f"`python -m mic_tf.serving load --bundle_dir={bundle_dir}` first")
        if state.sync is not None:
            return _reload_workers(state, bundle, bundle_dir, old, start)
        try:
            model = state.load_model(bundle_dir)
        except (MicError, OSError, ValueError) as e:
            state.metrics.reloads.labels("bad_bundle").inc()
            return _error(400, f"cannot load {bundle_dir}: {e}")
        state.swap(model)
    state.metrics.reloads.labels("ok").inc()
    return JSONResponse({"version": bundle.version, "previous": old.version,
                         "seconds": round(time.perf_counter() - start, 3)})


def _reload_workers(state: AppState, bundle: Bundle, bundle_dir: str, old, start
                    ) -> JSONResponse:
    """`_reload` with several workers: this one leads the two-phase switch of `workers.py`."""
    try:
        with state.sync.leader():
            try:
                model = state.load_model(bundle_dir)
            except (MicError, OSError, ValueError) as e:
                state.metrics.reloads.labels("bad_bundle").inc()
                return _error(400, f"cannot load {bundle_dir}: {e}")
            result = state.sync.reload(model, state.settings.reload_prepare_timeout_s)
    except ReloadBusy:
        return _error(409, "another reload is running")
    seconds = round(time.perf_counter() - start, 3)
    workers = {str(p): v for p, v in result["workers"].items()}
    if result.get("abandoned"):
        state.metrics.reloads.labels("abandoned").inc()
        return _error(504 if "within" in result["error"] else 400,
                      f"reload abandoned, every worker still serves {old.version}: "
                      f"{result['error']}", workers=workers)
    state.metrics.reloads.labels("ok").inc()
    return JSONResponse({"version": bundle.version, "previous": old.version, "seconds": seconds,
                         "workers": workers, "all_switched": result["ok"]})
