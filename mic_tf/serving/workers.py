"""Several uvicorn worker processes on one port (`serve --workers=N`): how a reload reaches every
worker, and what each worker says about itself.

Each worker is a process with its own copy of the model (memory x N) and its own GIL, which is
the point: a request's Python and numpy work (~4-5 ms of CPU) no longer queues behind the other
requests of the same process. The workers share a state folder (`serve` creates one per start
under $TMPDIR and passes it as $MIC_SERVE_STATE_DIR):

  target.json       {"seq", "serving": {"version", "bundle_dir"}, "next": {...} or null}
  reload.lock       flock: one reload at a time across the workers
  workers/PID.json  each live worker's state: {"pid", "version", "prepared", "failed", "error"}
  prometheus/       prometheus_client's multiprocess files (/metrics sums the workers)

A reload, by the worker that receives it (the leader), in two phases:
  1. takes reload.lock (409 when another reload runs), checks the bundle and Redis, loads the new
     model beside its own (as with one worker);
  2. prepare: writes `next` = the new bundle. Every worker's sync thread (polling target.json
     every `poll_s`) loads it beside the model it keeps serving and reports it `prepared`;
  3. switch, once every live worker prepared it: writes `serving` = the new bundle, `next` = null,
     swaps its own model; each other worker swaps on its next poll;
  4. answers 200 once every live worker reports the new version.
If a worker fails to load the bundle, or does not prepare it within `prepare_timeout_s`, the
reload is abandoned (`next` reset, every worker drops the prepared copy, nobody switched) and
answered 504 / 400 naming the workers. So the versions mix only in step 3: between the leader's
swap and the last worker's poll, <= `poll_s` (0.2 s) plus a loaded machine's scheduling delay.
Before it every worker answers with the old version; after the reload's 200, every worker with
the new one. Each worker still swaps one reference, so its requests in flight finish on the model
they started with. A worker (re)started by uvicorn reads target.json and starts on `serving`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path

STATE_ENV = "MIC_SERVE_STATE_DIR"
SETTINGS_ENV = "MIC_SERVE_SETTINGS"

log = logging.getLogger("mic_tf.serving")


def write_json(path: Path, value) -> None:
    """Written beside and renamed into place: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_state_dir(folder) -> Path:
    """A fresh state folder's layout (called by `serve` before the workers start)."""
    folder = Path(folder)
    (folder / "workers").mkdir(parents=True, exist_ok=True)
    (folder / "prometheus").mkdir(exist_ok=True)
    return folder


class ReloadBusy(Exception):
    """Another worker (or this one) is running a reload."""


class WorkerSync:
    """One worker's side of the protocol above.

    Args:
      folder: the state folder.
      state: the worker's `AppState` (its `model`, `swap`, `metrics`).
      load: `fn(bundle_dir) -> ServingModel`, warmed up (raises on a bad bundle).
      poll_s: how often the sync thread reads target.json.
    """

    def __init__(self, folder, state, load, poll_s: float = 0.2):
        self.folder, self.state, self.load, self.poll_s = Path(folder), state, load, poll_s
        self.pid = os.getpid()
        self.pending = None  # a prepared model (next version), served by nobody yet
        self.failed: dict | None = None  # {"version", "seq", "error"} of the last failed prepare
        self.leading = False
        self._lock = threading.Lock()  # the sync thread and a reload never load at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mic-worker-sync", daemon=True)

    # ------------------------------------------------------------------ files
    @property
    def target_path(self) -> Path:
        return self.folder / "target.json"

    def target(self) -> dict | None:
        return read_json(self.target_path)

    def start_bundle(self, default: str) -> str:
        """The bundle a starting worker loads: the one being served, if a reload happened."""
        target = self.target()
        return target["serving"]["bundle_dir"] if target else default

    def report(self) -> None:
        model = self.state.model
        write_json(self.folder / "workers" / f"{self.pid}.json", {
            "pid": self.pid, "version": model.version, "bundle_dir": str(model.bundle.path),
            "prepared": self.pending.version if self.pending is not None else None,
            "failed": self.failed, "updated": time.time()})

    def workers(self) -> dict:
        """Live workers' states by pid (files of dead pids are removed)."""
        out = {}
        for path in (self.folder / "workers").glob("*.json"):
            info = read_json(path)
            if info is None:
                continue
            if not pid_alive(int(info["pid"])):  # killed: its file and its live metrics go
                with contextlib.suppress(OSError):
                    path.unlink()
                self.state.metrics.process_exit(int(info["pid"]))
                continue
            out[int(info["pid"])] = info
        return out

    def start(self) -> "WorkerSync":
        target = self.target()
        if target is None:  # the first worker up writes the start state
            with self._flock(blocking=True):
                if self.target() is None:
                    model = self.state.model
                    write_json(self.target_path, {"seq": 0, "next": None, "serving": {
                        "version": model.version, "bundle_dir": str(model.bundle.path)}})
        self.report()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            (self.folder / "workers" / f"{self.pid}.json").unlink()

    @contextlib.contextmanager
    def _flock(self, blocking: bool):
        with open(self.folder / "reload.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                raise ReloadBusy() from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ follower
    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.step()
            except Exception:  # the sync thread must outlive any one bad step
                log.exception("worker sync step failed")

    def step(self) -> None:
        """One poll: prepare `next`, switch to `serving`, or drop an abandoned preparation."""
        if self.leading or not self._lock.acquire(blocking=False):
            return  # this worker leads a reload: the reload does the work
        try:
            target = self.target()
            if target is None:
                return
            current = self.state.model.version
            nxt, serving = target.get("next"), target["serving"]
            if nxt is not None and nxt["version"] != current:
                self._prepare(nxt, target["seq"])
            elif nxt is None and serving["version"] != current:
                self._prepare(serving, target["seq"])
                if self.pending is not None and self.pending.version == serving["version"]:
                    self.state.swap(self.pending)
                    self.pending = None
                    self.state.metrics.reloads.labels("followed").inc()
            elif self.pending is not None:  # abandoned, or already served
                self.pending = None
            self.report()
        finally:
            self._lock.release()

    def _prepare(self, wanted: dict, seq: int) -> None:
        if self.pending is not None and self.pending.version == wanted["version"]:
            return
        if self.failed and self.failed["version"] == wanted["version"] \
                and self.failed["seq"] == seq:
            return  # failed already for this reload: not again every poll
        self.pending = None
        try:
            model = self.load(wanted["bundle_dir"])
        except Exception as e:  # a bundle this worker cannot load: reported, the leader aborts
            self.failed = {"version": wanted["version"], "seq": seq, "error": str(e)[:500]}
            self.state.metrics.reloads.labels("follow_failed").inc()
            log.error("worker %s cannot load %s: %s", self.pid, wanted["bundle_dir"], e)
            return
        if model.version != wanted["version"]:
            self.failed = {"version": wanted["version"], "seq": seq,
                           "error": f"{wanted['bundle_dir']} now holds {model.version}"}
            return
        self.pending, self.failed = model, None

    # ------------------------------------------------------------------ leader
    def reload(self, model, prepare_timeout_s: float = 900.0, switch_timeout_s: float = 30.0
               ) -> dict:
        """Steps 2-4 for a loaded, warmed-up `model` (the caller holds `leader()`).

        Returns `{"ok": bool, "workers": {pid: version}, "error": ...}`; not ok = abandoned
        (nobody switched) or some worker did not confirm the switch in time."""
        target = self.target() or {"seq": 0, "serving": {
            "version": self.state.model.version, "bundle_dir": str(self.state.model.bundle.path)}}
        seq = int(target["seq"]) + 1
        new = {"version": model.version, "bundle_dir": str(model.bundle.path)}
        self.pending = model
        write_json(self.target_path, {"seq": seq, "serving": target["serving"], "next": new})
        self.report()
        deadline = time.monotonic() + prepare_timeout_s
        while True:
            workers = self.workers()
            failed = {p: w["failed"]["error"] for p, w in workers.items()
                      if w.get("failed") and w["failed"]["version"] == model.version
                      and w["failed"]["seq"] == seq}
            waiting = [p for p, w in workers.items()
                       if model.version not in (w["version"], w["prepared"])]
            if failed or (waiting and time.monotonic() > deadline):
                write_json(self.target_path, {"seq": seq + 1, "serving": target["serving"],
                                              "next": None})
                self.pending = None
                self.report()
                why = (f"workers {sorted(failed)} could not load the bundle: "
                       f"{next(iter(failed.values()))}" if failed else
                       f"workers {sorted(waiting)} did not load the bundle within "
                       f"{prepare_timeout_s:g} s")
                return {"ok": False, "abandoned": True, "error": why,
                        "workers": {p: w["version"] for p, w in workers.items()}}
            if not waiting:
                break
            time.sleep(0.05)
        write_json(self.target_path, {"seq": seq + 1, "serving": new, "next": None})
        self.state.swap(model)
        self.pending = None
        self.report()
        deadline = time.monotonic() + switch_timeout_s
        while True:
            workers = self.workers()
            waiting = [p for p, w in workers.items() if w["version"] != model.version]
            if not waiting or time.monotonic() > deadline:
                out = {"ok": not waiting, "workers": {p: w["version"] for p, w in workers.items()}}
                if waiting:
                    out["error"] = f"workers {sorted(waiting)} had not switched after " \
                                   f"{switch_timeout_s:g} s"
                return out
            time.sleep(0.02)

    @contextlib.contextmanager
    def leader(self):
        """Held for a whole reload: across workers (flock, ReloadBusy when taken) and against
        this worker's sync thread."""
        with self._flock(blocking=False):
            with self._lock:
                self.leading = True
                try:
                    yield
                finally:
                    self.leading = False
