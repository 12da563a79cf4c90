"""Starts N local workers of one multi-worker job (tests, single-host use).

    python -m mic_tf.distributed.launch --workers=2 -- --dataset=ml-100k --encoder=gru4rec

Each worker runs `experiments/run.py --distribute=multi_worker FLAGS` with a generated
`TF_CONFIG` (free localhost ports; worker 0 is the chief). The chief's standard output (the run's
final JSON line) is this command's; every worker's log lines go to standard error prefixed with
`[worker i]`. When a worker dies (a signal, or a non-zero exit), the launcher names it, stops the
others (SIGTERM, then SIGKILL after --grace_seconds) and exits with status 1; running the same
command again resumes from the chief's last checkpoint. On several machines, set `TF_CONFIG` on
each and run `experiments/run.py --distribute=multi_worker` there (README).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[2]

flags.DEFINE_integer("workers", 2, "Number of local workers (processes).", lower_bound=1)
flags.DEFINE_string("script", str(REPO / "experiments" / "run.py"), "The training script each "
                    "worker runs (it must accept --distribute=multi_worker and read TF_CONFIG).")
flags.DEFINE_float("grace_seconds", 10.0, "After a worker dies, how long the others get to stop "
                   "after SIGTERM before SIGKILL.", lower_bound=0.0)
FLAGS = flags.FLAGS


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on localhost (held open together while chosen, so they
    differ; another process could still take one before the worker binds it)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()
    stream.close()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def start_workers(script: str, args: list[str], count: int) -> list[subprocess.Popen]:
    ports = free_ports(count)
    if not any(a.startswith("--distribute") for a in args):
        args = ["--distribute=multi_worker", *args]
    procs, pumps = [], []
    for i in range(count):
        env = {**os.environ, "TF_CONFIG": tf_config(ports, i)}
        proc = subprocess.Popen([sys.executable, script, *args], env=env, text=True,
                                stdout=None if i == 0 else subprocess.PIPE,
                                stderr=subprocess.PIPE)
        procs.append(proc)
        pumps.append(threading.Thread(target=_pump, args=(proc.stderr, f"[worker {i}] ",
                                                          sys.stderr), daemon=True))
        if i:
            pumps.append(threading.Thread(target=_pump, args=(proc.stdout, f"[worker {i}] ",
                                                              sys.stderr), daemon=True))
    for t in pumps:
        t.start()
    print(f"launched {count} workers on localhost ports {ports}: "
          + ", ".join(f"worker {i} pid {p.pid}" for i, p in enumerate(procs)),
          file=sys.stderr, flush=True)
    return procs


def stop(procs, grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def supervise(procs, grace: float) -> int:
    """Waits for every worker; the first that fails stops the job. Returns the exit status."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            i, code = failed[0]
            print(f"error: worker {i} (pid {procs[i].pid}) {describe_exit(code)}; stopping the "
                  f"other workers. Run the same command again to resume from the last "
                  f"checkpoint.", file=sys.stderr, flush=True)
            stop(procs, grace)
            return 1
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def main(argv):
    script_args = argv[1:]
    procs = start_workers(FLAGS.script, script_args, FLAGS.workers)
    try:
        code = supervise(procs, FLAGS.grace_seconds)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        stop(procs, FLAGS.grace_seconds)
        print("interrupted: run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    app.run(main)
