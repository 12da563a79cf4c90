"""Ctrl-C in the scripts: one line saying how to resume, exit status 130, no traceback.

Standard library only, so that `install(...)` can run before the heavy imports (TensorFlow takes
seconds to import, and a Ctrl-C then must not print a traceback either).
"""

import os
import sys

EXIT_STATUS = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


def stop(message: str):
    """Prints `message` on one line and exits with status 130 (call from `except
    KeyboardInterrupt`; the `finally` / `except` blocks of the writers have already removed their
    temporary files by then)."""
    sys.stderr.write(f"\ninterrupted: {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    # Not sys.exit: the interpreter's finalisation with TensorFlow's and Faiss' threads still
    # alive crashed now and then (SIGSEGV, exit -11, seen in the Ctrl-C test); the checkpoint
    # and every output are written atomically, so there is nothing left to finalise.
    os._exit(EXIT_STATUS)


def install(message: str) -> None:
    """For a Ctrl-C outside `main` (while importing): the same line and status, no traceback."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            sys.stderr.write(f"\ninterrupted: {message}\n")
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(EXIT_STATUS)  # nothing started yet: no cleanup to run
        previous(kind, value, tb)

    sys.excepthook = hook
