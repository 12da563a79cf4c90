"""The cluster a worker belongs to (the standard `TF_CONFIG`), its strategy, and collectives.

`TF_CONFIG` is TensorFlow's JSON cluster description, one per process:

    {"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 1}}

(an optional `"chief": ["host:port"]` job is the chief; otherwise worker 0 is). Every worker runs
the same command; `mic_tf.distributed.launch` generates the variable for N local workers.

The strategy is `tf.distribute.MultiWorkerMirroredStrategy` with ring collectives (the CPU
implementation; NCCL is picked on GPUs). It must be created before TensorFlow runs any op, so
`experiments/run.py` creates it right after checking the flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np

from mic_tf.errors import UsageError

SUPPORTED_JOBS = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the job, from `TF_CONFIG`."""

    num_workers: int  # chief + workers
    task_type: str
    task_index: int
    has_chief_job: bool = False  # a "chief" job exists (else worker 0 is the chief)

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                             and not self.has_chief_job)

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"


def parse_tf_config(text: str | None) -> Cluster:
    """Checks `TF_CONFIG` and returns the cluster; UsageError naming what is wrong."""
    if not text:
        raise UsageError("--distribute=multi_worker needs the TF_CONFIG environment variable (the "
                         "cluster and this worker's task); start the workers with `python -m "
                         "mic_tf.distributed.launch --workers=N -- FLAGS` on one machine, or set "
                         "TF_CONFIG on each machine (README: Training across machines)")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"TF_CONFIG is not valid: expected JSON with \"cluster\" and \"task\" "
                         f"{{\"type\", \"index\"}} ({e})") from None
    other = sorted(set(cluster) - set(SUPPORTED_JOBS))
    if other:
        raise UsageError(f"TF_CONFIG has the job(s) {other}: only {list(SUPPORTED_JOBS)} are "
                         f"supported (MultiWorkerMirroredStrategy; parameter servers would need "
                         f"ParameterServerStrategy, see BUILD_NOTES.md: Distributed training)")
    if task_type not in cluster or not 0 <= index < len(cluster[task_type]):
        raise UsageError(f"TF_CONFIG's task {task_type} {index} is not in its cluster "
                         f"{ {k: len(v) for k, v in cluster.items()} }")
    if len(cluster.get("chief", [])) > 1:
        raise UsageError("TF_CONFIG lists more than one chief")
    return Cluster(num_workers=sum(len(v) for v in cluster.values()), task_type=task_type,
                   task_index=index, has_chief_job="chief" in cluster)


def cluster_from_env() -> Cluster:
    return parse_tf_config(os.environ.get("TF_CONFIG"))


def make_strategy(cluster: Cluster):
    """`MultiWorkerMirroredStrategy` over `TF_CONFIG`, one replica per worker (checked)."""
    import tensorflow as tf

    comm = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        if tf.config.list_physical_devices("GPU")
        else tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
    if strategy.num_replicas_in_sync != cluster.num_workers:
        raise UsageError(f"{strategy.num_replicas_in_sync} replicas on {cluster.num_workers} "
                         f"workers: the multi-worker loop supports one replica per worker (one "
                         f"CPU or one GPU each; set CUDA_VISIBLE_DEVICES per worker)")
    return strategy


class Collectives:
    """Small collectives of the loop, run from the host: a barrier and broadcasts from the chief
    (an all-reduce SUM of the chief's values with zeros from every other worker: exact for every
    dtype, as x + 0 = x). Every worker must make the same calls in the same order."""

    def __init__(self, strategy, is_chief: bool):
        import tensorflow as tf

        self.strategy = strategy
        self.is_chief = is_chief

        def fn(*xs):
            ctx = tf.distribute.get_replica_context()
            # identity: the values must live on the replica's device (else "destinations can
            # not be empty")
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.identity(x) for x in xs])

        self._sum = tf.function(lambda *xs: strategy.run(fn, args=xs), reduce_retracing=True)

    def _all_sum(self, arrays):
        """Element-wise sums over workers, one all-reduce per dtype (a batch of mixed dtypes
        would be concatenated into one buffer)."""
        import tensorflow as tf

        out = [None] * len(arrays)
        for dtype in sorted({a.dtype.str for a in arrays}):  # the same order on every worker
            picked = [i for i, a in enumerate(arrays) if a.dtype.str == dtype]
            sums = self._sum(*(tf.constant(arrays[i]) for i in picked))
            for i, s in zip(picked, sums):
                out[i] = self.strategy.experimental_local_results(s)[0].numpy()
        return out

    def barrier(self) -> None:
        self._all_sum([np.ones([1], np.float32)])

    def broadcast(self, arrays: list) -> list:
        """The chief's `arrays` on every worker (the others pass arrays of the same shapes and
        dtypes, whose values are ignored). Booleans travel as int32."""
        if not arrays:
            return []
        sent = []
        for a in arrays:
            a = np.asarray(a)
            a = a.astype(np.int32) if a.dtype == bool else a
            sent.append(a if self.is_chief else np.zeros_like(a))
        out = self._all_sum(sent)
        return [o.astype(bool) if np.asarray(a).dtype == bool else o for o, a in zip(out, arrays)]

    def broadcast_json(self, value):
        """The chief's JSON-serialisable `value` on every worker."""
        data = np.frombuffer(json.dumps(value).encode(), np.uint8).astype(np.int32)
        (length,) = self.broadcast([np.array([len(data)], np.int64)])
        buffer = np.zeros(int(length[0]), np.int32)
        if self.is_chief:
            buffer[:] = data
        (received,) = self.broadcast([buffer])
        return json.loads(received.astype(np.uint8).tobytes().decode())


class Distribution:
    """A worker's view of the job: its `Cluster`, the strategy and the host collectives."""

    def __init__(self, cluster: Cluster, strategy):
        self.cluster = cluster
        self.strategy = strategy
        self.collectives = Collectives(strategy, cluster.is_chief)

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief

    @property
    def num_workers(self) -> int:
        return self.cluster.num_workers

    def leave(self, timeout_seconds: float = 600.0) -> None:
        """Ends this worker's process once every worker is done; call it after the outputs are
        written. A worker must not exit right after the last collective: ring collectives fetch
        buffers lazily, so a peer may still be reading this worker's last buffer, and exiting
        closes the socket under it ("Collective ops is aborted by: Socket closed", seen on CI
        under load). So the collective barrier is followed by a barrier of TensorFlow's
        coordination service, which no worker passes before every worker has finished its
        collectives. The chief hosts that service: when it exits just after releasing the
        barrier, another worker may get an error instead of the release; by then every
        collective is complete, so that error is reported and the worker still exits with 0.
        The interpreter's finalisation is skipped (as on Ctrl-C, `interrupts.stop`): a worker
        that shuts TensorFlow down normally waits for the others' heartbeats."""
        import tensorflow as tf
        from tensorflow.python.eager import context

        self.collectives.barrier()
        try:
            context.context().wait_at_barrier("mic_tf_leave", int(timeout_seconds * 1000))
        except tf.errors.OpError as e:
            if self.is_chief or not isinstance(e, tf.errors.UnavailableError):
                print(f"warning: {self.cluster.name}: the exit barrier failed after every "
                      f"collective had completed ({type(e).__name__}); exiting anyway",
                      file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    @classmethod
    def from_env(cls) -> "Distribution":
        """Reads `TF_CONFIG` and creates the strategy (before TensorFlow runs any op)."""
        cluster = cluster_from_env()
        return cls(cluster, make_strategy(cluster))
