"""Ctrl-C in the scripts: one line saying how to resume, exit status 130, no traceback.

Standard library only, so that `install(...)` can run before the heavy imports (TensorFlow takes
seconds to import, and a Ctrl-C then must not print a traceback either).
"""

import _thread
import os
import signal
import sys
import threading
import time

EXIT_STATUS = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
REPEAT_SECONDS = 2.0
_stopping = threading.Event()  # set by stop(): a repeated Ctrl-C must not interrupt its last line


def stop(message: str):
    """Prints `message` on one line and exits with status 130 (call from `except
    KeyboardInterrupt`; the `finally` / `except` blocks of the writers have already removed their
    temporary files by then)."""
    _stopping.set()
    sys.stderr.write(f"\ninterrupted: {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    # Not sys.exit: the interpreter's finalisation with TensorFlow's and Faiss' threads still
    # alive crashed now and then (SIGSEGV, exit -11, seen in the Ctrl-C test); the checkpoint
    # and every output are written atomically, so there is nothing left to finalise.
    os._exit(EXIT_STATUS)


def install(message: str, repeat_seconds: float = REPEAT_SECONDS) -> None:
    """Makes Ctrl-C reliable and quiet: the same line and status for a Ctrl-C outside `main`
    (while importing), and a KeyboardInterrupt raised again every `repeat_seconds` until the
    script's `except KeyboardInterrupt` has called `stop`.

    Why again: Python drops an exception raised inside a `__del__` or a weakref callback
    ("Exception ignored in ..."), and TensorFlow runs such finalisers all through training: a
    Ctrl-C landing in one is lost. That is the likeliest reading of a Ctrl-C test here in which
    run.py went on training for 120 s after SIGINT (rare: not seen again in 15 tries).
    Left alone when SIGINT is ignored at start (`nohup`, a shell's background job), as Python
    itself does."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            stop(message)  # nothing started yet: no cleanup to run
        previous(kind, value, tb)

    sys.excepthook = hook
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return
    interrupted = threading.Event()

    def repeat():  # ends with the process: stop() calls os._exit
        while True:
            time.sleep(repeat_seconds)
            _thread.interrupt_main(signal.SIGINT)

    def on_sigint(signum, frame):
        if _stopping.is_set():
            return
        if not interrupted.is_set():
            interrupted.set()
            threading.Thread(target=repeat, name="sigint-repeat", daemon=True).start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
