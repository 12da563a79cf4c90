"""The multi-worker training loop: the model's own train step under `strategy.run`.

Keras 3's `fit` does not run under `MultiWorkerMirroredStrategy` (keras-team/keras#20585), so
this loop replaces `fit` and nothing else: the step is `RetrievalModel.train_update`, the same
function `fit`'s `train_step` calls, run in each replica; the periods, validation, early stopping,
checkpoints and mining schedule are those of `mic_tf.training.trainer` (its `ValidationCallback`
and the MIC `MiningCallback` are reused as they are).

Data: every worker builds the same global batch of step `s` (the samplers and the MIC views are
stateless functions of `(seed, s)`) and its replica keeps rows `[r * b, (r + 1) * b)`, `b = B /
N`: the users of one step are distinct across replicas (the ComiRec sampler draws B distinct
users), and together the replicas hold exactly the batch one process with batch B would train
on. The losses' means and in-batch candidates span the replicas (`mic_tf.models.replicas`),
Keras' optimizer sums the gradients over replicas, so the update is the single-process update.

Roles: the chief (worker 0, or the `chief` job) evaluates the valid users, writes the
checkpoints, TensorBoard and the run folder, and mines MIC's neighbours; the results (the run
state after each validation, the mined lists, the restored weights when resuming) are broadcast
to the other workers, which write nothing. Evaluation, mining and export run on `eval_model`, a
plain (not distributed) copy of the model that the chief refreshes from the trained weights.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mic_tf.data.dataset import EvalSplit, ProcessedDataset
from mic_tf.data.pipeline import make_train_dataset, steps_per_epoch
from mic_tf.distributed.cluster import Collectives
from mic_tf.errors import UsageError
from mic_tf.models import replicas
from mic_tf.training.checkpoints import CheckpointKeeper, RunState
from mic_tf.training.trainer import (TrainConfig, U2IEvaluator, ValidationCallback, make_optimizer,
                                     resolve_optimizer)

# The `MinedNeighbours` fields, which are also the names of the MIC model's variables holding them.
MINED_FIELDS = ("user_pos", "user_hard", "item_pos", "item_hard", "user_items", "item_users")


def check_distributable(config: TrainConfig, num_workers: int) -> None:
    """The settings the multi-worker loop cannot run, as UsageErrors naming the flag."""
    if config.batch_size % num_workers:
        raise UsageError(f"--batch_size={config.batch_size} is not allowed with {num_workers} "
                         f"workers: the global batch is split evenly over the workers, so pass a "
                         f"multiple of {num_workers}")
    if config.jit_compile:
        raise UsageError("--jit_compile is not allowed with --distribute=multi_worker: the step "
                         "holds cross-replica collectives (the all_gather of the in-batch "
                         "negatives, the gradient all-reduce) that XLA does not compile on this "
                         "path; pass --nojit_compile (the default there)")


class DistributedTrainer:
    """`Trainer`'s contract (`fit`, `evaluate_best`, `test`, `writer`, `optimizer_name`) for one
    worker of a `MultiWorkerMirroredStrategy` job.

    Args:
      build: `() -> RetrievalModel`, called once inside `strategy.scope()` (the trained model)
        and once outside (`eval_model`).
      ds, config, out_dir, evaluator, map_fn, log: as for `Trainer`.
      strategy: the job's `MultiWorkerMirroredStrategy` (one replica per worker).
      is_chief: this worker evaluates and writes.
      mining: MIC's `MiningCallback` (None without mining); its schedule runs on every worker.
    """

    def __init__(self, build, ds: ProcessedDataset, config: TrainConfig, out_dir: str | Path,
                 strategy, is_chief: bool, evaluator=None, map_fn=None, log=None, mining=None):
        check_distributable(config, strategy.num_replicas_in_sync)
        self.strategy, self.is_chief = strategy, is_chief
        self.collectives = Collectives(strategy, is_chief)
        self.ds, self.config, self.out_dir = ds, config, Path(out_dir)
        self.map_fn, self.mining = map_fn, mining
        self.local_batch = config.batch_size // strategy.num_replicas_in_sync
        self.log = (log or (lambda msg: print(msg, file=sys.stderr, flush=True))) if is_chief \
            else (lambda msg: None)
        self.optimizer_name = resolve_optimizer(config.optimizer, ds.num_items)
        first = next(iter(self._dataset(0)))
        with strategy.scope():
            self.model = build()
            self.model.compile(optimizer=make_optimizer(self.optimizer_name, config.learning_rate),
                               jit_compile=False)
            self.model.build_from_batch(first)
            self.model.optimizer.build(self.model.trainable_variables)
        self.eval_model = build()
        self.eval_model.build_from_batch(first)
        self.evaluator = evaluator or U2IEvaluator(ds.item_category, config.top_n,
                                                   config.eval_batch_size, config.exclude_history)
        self.valid = ds.eval_split("valid", config.maxlen) if is_chief else None
        self._test = None
        self.writer = (tf.summary.create_file_writer(str(self.out_dir / "tensorboard"))
                       if is_chief else None)
        self.keeper = CheckpointKeeper(self.model, self.out_dir / "checkpoints") if is_chief \
            else None
        self._step = tf.function(self._global_step)
        self.log(f"optimizer: {self.optimizer_name} ({config.optimizer}, {ds.num_items} items); "
                 f"{strategy.num_replicas_in_sync} workers x batch {self.local_batch}")

    # ---- the step ----------------------------------------------------------------------------
    def _dataset(self, start_step: int):
        c = self.config
        return make_train_dataset(self.ds, batch_size=c.batch_size, maxlen=c.maxlen, seed=c.seed,
                                  sampler=c.sampler, start_step=start_step, map_fn=self.map_fn)

    def _replica_step(self, batch):
        local = {k: replicas.local_rows(v, self.local_batch) for k, v in batch.items()}
        return self.model.train_update(local, self.model.draw_noise(local))

    def _global_step(self, batch):
        """One step of the job on the global batch; the loss terms of the global batch."""
        shares = self.strategy.run(self._replica_step, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in shares.items()}

    def run_steps(self, count: int, start_step: int = 0) -> list[dict]:
        """`count` steps from global step `start_step`, without validation: each step's loss
        terms (tests and benchmarks; `fit` is the full loop)."""
        data = iter(self._dataset(start_step))
        out = []
        for i in range(count):
            out.append({k: float(v) for k, v in self._step(next(data)).items()})
            self._maybe_mine(start_step + i + 1)
        return out

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> RunState:
        c = self.config
        state = self._restore()
        if state.finished:
            self.log("training already finished; evaluating the best checkpoint")
            return state
        if self.mining is not None:
            self.mining.attach_state(state)
            self.mining.writer = self.writer
        total_evals = math.ceil(c.max_steps / c.eval_every)
        epochs = c.eval_every / steps_per_epoch(self.ds, c.sampler, c.batch_size)
        self.log(f"training {self.model.encoder_name}: up to {c.max_steps} steps, valid every "
                 f"{c.eval_every} steps ({epochs:.1f} epochs), patience {c.patience}, global "
                 f"batch {c.batch_size}")
        data = iter(self._dataset(state.evals_done * c.eval_every))
        for period in range(state.evals_done, total_evals):
            sums, start = {}, time.perf_counter()
            for i in range(c.eval_every):
                step = period * c.eval_every + i + 1
                for name, value in self._step(next(data)).items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                if self.is_chief and step % c.log_every == 0:
                    with self.writer.as_default(step=step):
                        for name, total in sums.items():
                            tf.summary.scalar(f"train/{name}", total / (i + 1))
                self._maybe_mine(step)
            seconds = time.perf_counter() - start
            self.log(f"period {period + 1}/{total_evals}: " + " ".join(
                f"{k} {v / c.eval_every:.4f}" for k, v in sums.items())
                + f" ({c.eval_every * c.batch_size / seconds:.0f} examples/s)")
            state = self._validate(period, state,
                                   {k: v / c.eval_every for k, v in sums.items()})
            if state.finished:
                break
        if not state.finished:
            state.finished = True
            if self.is_chief:
                self.keeper.save(state)
        if self.writer is not None:
            self.writer.flush()
        return state

    def _validate(self, period: int, state: RunState, logs: dict) -> RunState:
        """The chief evaluates, checkpoints and decides; every worker gets its run state."""
        if self.is_chief:
            self.sync_eval_model()
            callback = ValidationCallback(self, state)
            callback.set_model(self.eval_model)
            callback.on_epoch_end(period, logs)
        state = RunState(**self.collectives.broadcast_json(dataclasses.asdict(state)))
        if self.mining is not None:
            self.mining.attach_state(state)
        return state

    def _restore(self) -> RunState:
        """The chief restores its checkpoint; its state and (when resuming) every model and
        optimizer variable are broadcast, so other workers need no access to the run folder."""
        state = (self.keeper.restore() if self.is_chief else None) or RunState()
        state = RunState(**self.collectives.broadcast_json(dataclasses.asdict(state)))
        if state.evals_done:
            variables = [*self.model.variables, *self.model.optimizer.variables]
            values = self.collectives.broadcast([keras.ops.convert_to_numpy(v)
                                                 for v in variables])
            for variable, value in zip(variables, values):
                variable.assign(value)
            self.log(f"resuming from step {state.evals_done * self.config.eval_every} "
                     f"(checkpoint {state.checkpoint})")
        return state

    def _maybe_mine(self, step: int) -> None:
        """MIC's mining at the steps its schedule says (same decision on every worker): mined on
        the chief, broadcast, stored in every worker's model."""
        if self.mining is None or not self.mining.due(step):
            return
        model = self.model
        targets = [model.user_bank, *(getattr(model, name) for name in MINED_FIELDS)]
        if self.is_chief:
            self.sync_eval_model()
            mined, bank, _ = self.mining.compute(step, self.eval_model)
            arrays = [bank, *(getattr(mined, name) for name in MINED_FIELDS)]
        else:
            arrays = [np.zeros(v.shape) for v in targets]
        arrays = self.collectives.broadcast([np.asarray(a, dtype=v.dtype)
                                             for a, v in zip(arrays, targets)])
        for variable, value in zip(targets, arrays):
            variable.assign(value)

    # ---- evaluation (chief) ------------------------------------------------------------------
    def sync_eval_model(self) -> None:
        """Copies every weight of the trained model (trainable or not) into `eval_model`."""
        self.eval_model.set_weights(self.model.get_weights())

    @property
    def test(self) -> EvalSplit:
        if self._test is None:
            self._test = self.ds.eval_split("test", self.config.maxlen)
        return self._test

    def evaluate_best(self, split: str = "test"):
        """Loads the best weights into `eval_model` and evaluates `split` once (chief)."""
        self.eval_model.load_weights(str(self.keeper.best_path))
        return self.evaluator(self.eval_model, self.test if split == "test" else self.valid)
