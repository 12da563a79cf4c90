"""A local `redis-server` process on a free localhost port (Debian's package), for the serving
tests and benchmarks: started, stopped with its data saved (`SHUTDOWN SAVE`, read back on the
next start), paused and resumed (SIGSTOP / SIGCONT: a Redis that accepts connections but never
answers, i.e. a slow one)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from mic_tf.serving.errors import ServingConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """`RedisServer(folder).start()`; `url`, `stop()`, `pause()`, `resume()`; extra
    `redis-server` arguments (e.g. `["--maxmemory", "4gb"]`) go to `args`."""

    def __init__(self, folder: Path, args=()):
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServingConfigError("redis-server is not installed: `apt-get install "
                                     "redis-server` (Debian's package; .ci/run installs it)")
        self.exe, self.folder, self.port = exe, Path(folder), free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc, self.args = None, list(args)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--dbfilename", "dump.rdb",
             "--protected-mode", "yes", "--loglevel", "warning",
             "--logfile", str(self.folder / "redis.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600  # a big saved dataset takes a while to read back
        while not self._pong():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log")
                raise RuntimeError("redis-server did not start: " +
                                   (log.read_text()[-2000:] if log.exists() else "no log"))
            time.sleep(0.02)
        return self

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, save: bool = True) -> None:
        """Shuts down (saving the data unless `save=False`) and waits for the process to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"SHUTDOWN SAVE\r\n" if save else b"SHUTDOWN NOSAVE\r\n")
                s.recv(64)
        try:
            self.proc.wait(600)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
