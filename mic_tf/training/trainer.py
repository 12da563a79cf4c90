"""Training loop: `model.fit` in evaluation periods, early stopping on valid recall@50, resume.

One "epoch" of `fit` is one evaluation period of `eval_every` steps. After each period the
`ValidationCallback` evaluates the valid users through the evaluation module, keeps the best
weights, counts patience, and saves a checkpoint; the test split is evaluated once, at the end,
with the best weights.
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
from mic_tf.data.pipeline import SAMPLERS, make_train_dataset, steps_per_epoch
from mic_tf.evaluation.evaluate import evaluate
from mic_tf.errors import ConfigError
from mic_tf.training.checkpoints import CheckpointKeeper, RunState
from mic_tf.training.optimizers import FusedAdam, LazyAdam
from mic_tf.training.stopping import arm_patience, patience_counts
from mic_tf.utils.checks import INT32_MAX, boolean, check_fields, choice, integer, number
from mic_tf.utils.faiss_index import ItemIndex

SELECTION_METRIC = "recall@50"


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of the loop (the model's own live in the model)."""

    batch_size: int = 256
    maxlen: int = 20
    learning_rate: float = 1e-3
    max_steps: int = 10000
    eval_every: int = 100
    patience: int = 10
    # > 0: a validation without gain counts toward `patience` only once a period's basic loss
    # has been this fraction below the first period's (0: always counts, ComiRec's rule)
    patience_loss_drop: float = 0.0
    seed: int = 0
    sampler: str = "comirec"
    log_every: int = 20
    jit_compile: bool = False
    top_n: int = 50
    eval_batch_size: int = 2048
    exclude_history: bool = False
    optimizer: str = "auto"  # "adam", "lazy_adam" (touched rows only) or "auto" (see below)
    grad_norm_every: int = 500  # TensorBoard: each term's gradient norm on the shared weights
    verbose: int = 1

    def validate(self) -> None:
        check_fields(self, TRAIN_CHECKS)


OPTIMIZERS = ("auto", "adam", "lazy_adam")
# The allowed value of every TrainConfig field (a new field: one more line).
TRAIN_CHECKS = (
    integer("batch_size", 1), integer("maxlen", 1), number("learning_rate", 0, low_open=True),
    integer("max_steps", 1), integer("eval_every", 1), integer("patience", 1),
    number("patience_loss_drop", 0, 1, high_open=True),
    integer("seed", 0, INT32_MAX), choice("sampler", SAMPLERS), integer("log_every", 1),
    boolean("jit_compile"), integer("top_n", 1), integer("eval_batch_size", 1),
    boolean("exclude_history"), choice("optimizer", OPTIMIZERS), integer("grad_norm_every", 0),
    integer("verbose", 0, 2),
)
# "auto" switches to LazyAdam from this catalogue size: below it nearly every row is touched each
# step, so both give the same updates (and ComiRec's dense Adam stays the reference); above it
# dense Adam's full-table moment updates dominate the step (3.4x slower at 292k items).
LAZY_ADAM_MIN_ITEMS = 100_000


def resolve_optimizer(name: str, num_items: int) -> str:
    """`auto` -> `lazy_adam` for catalogues of >= LAZY_ADAM_MIN_ITEMS items, else `adam`."""
    if name == "auto":
        return "lazy_adam" if num_items >= LAZY_ADAM_MIN_ITEMS else "adam"
    return name


def default_jit_compile(num_items: int, requested: bool | None = None) -> bool:
    """`requested` when given; else XLA on the update below LAZY_ADAM_MIN_ITEMS items: 1.1-1.5x
    faster on ml-100k for every encoder but GRU4Rec (level); off above, where XLA's scatter of
    the sparse table updates was slower (YouTube DNN, 292k items: 19.5k vs 23.2k examples/s)."""
    if requested is not None:
        return bool(requested)
    return num_items < LAZY_ADAM_MIN_ITEMS


def make_optimizer(name: str, learning_rate: float, num_items: int = 0):
    name = resolve_optimizer(name, num_items)
    if name == "adam":
        return FusedAdam(learning_rate)  # Keras' Adam, one fused op per weight
    if name == "lazy_adam":
        return LazyAdam(learning_rate)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


class U2IEvaluator:
    """ComiRec's evaluation: embed the users, search all items with Faiss, compute the metrics."""

    def __init__(self, item_category: np.ndarray, top_n: int = 50, batch_size: int = 2048,
                 exclude_history: bool = False):
        self.item_category = item_category
        self.top_n = top_n
        self.batch_size = batch_size
        self.exclude_history = exclude_history

    def user_vectors(self, model, split: EvalSplit) -> np.ndarray:
        features = {"history": split.histories, "user_features": split.user_features}
        return model.predict(features, batch_size=self.batch_size, verbose=0)

    def __call__(self, model, split: EvalSplit):
        index = ItemIndex(keras.ops.convert_to_numpy(model.item_table()))
        return evaluate(self.user_vectors(model, split), index, split, self.item_category,
                        top_n=self.top_n, exclude_history=self.exclude_history)


class ValidationCallback(keras.callbacks.Callback):
    """Evaluates valid after each period; best weights, early stopping, checkpoint, TensorBoard."""

    def __init__(self, trainer: "Trainer", state: RunState):
        super().__init__()
        self.trainer = trainer
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        t = self.trainer
        start = time.time()
        metrics, _ = t.evaluator(self.model, t.valid)
        score = metrics[SELECTION_METRIC]
        step = (epoch + 1) * t.config.eval_every
        state = self.state
        state.evals_done = epoch + 1
        armed = self._patience_armed(logs)
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_eval, state.bad_evals = score, epoch, 0
            state.best_valid = dict(metrics)
            t.keeper.save_best()
        else:
            if state.plateau_step < 0:
                state.plateau_step = step  # e.g. MIC's mining may start here
            if armed:
                state.bad_evals += 1
        stop = state.bad_evals >= t.config.patience or step >= t.config.max_steps
        if stop:
            state.finished = True
            self.model.stop_training = True
        t.keeper.save(state)
        with t.writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(f"valid/{name}", value)
            tf.summary.scalar("valid/eval_seconds", time.time() - start)
        t.log(f"step {step}: valid recall@50 {score:.4f} ndcg@50 {metrics['ndcg@50']:.4f} "
              f"hit_rate@50 {metrics['hit_rate@50']:.4f} ({time.time() - start:.1f}s)"
              + (" *best*" if improved else f" (no gain for {state.bad_evals})" if armed else
                 f" (no gain; patience waits for basic_loss <= {self._loss_target():.4f})")
              + (" -> stopping" if stop else ""))

    def _loss_target(self) -> float:
        return (1.0 - self.trainer.config.patience_loss_drop) * self.state.loss_reference

    def _patience_armed(self, logs) -> bool:
        """Whether this period's validation counts toward patience (`patience_loss_drop`).

        A model that has not started to fit yet (the basic loss still near its first period's
        value) can sit on a flat validation curve for many periods before it learns: that is
        not convergence. Once the loss has fallen far enough, patience counts for good."""
        state, c = self.state, self.trainer.config
        try:
            state.loss_reference, state.loss_fell_at = arm_patience(
                state.loss_reference, state.loss_fell_at, (logs or {}).get("basic_loss"),
                c.patience_loss_drop, state.evals_done * c.eval_every)
        except ValueError:
            raise ConfigError("patience_loss_drop needs the period's basic_loss in the "
                              "training logs; this model reports none (set it to 0)") from None
        return patience_counts(state.loss_fell_at, c.patience_loss_drop)


class LossLogger(keras.callbacks.Callback):
    """Writes each loss term (running mean of the period) to TensorBoard every `every` steps."""

    def __init__(self, writer, every: int):
        super().__init__()
        self.writer = writer
        self.every = every

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0 and logs:
            with self.writer.as_default(step=step):
                for name, value in logs.items():
                    tf.summary.scalar(f"train/{name}", float(value))


class GradientNormLogger(keras.callbacks.Callback):
    """Every `every` steps, writes each loss term's gradient norm on the shared weights (the item
    table and the user tower) for a fixed probe batch, so the balance between the basic loss and
    the contrastive terms can be watched (`grad_norm/TERM`)."""

    def __init__(self, writer, every: int, batch):
        super().__init__()
        self.writer, self.every, self.batch = writer, every, batch

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0 or step == 1:
            norms = self.model.term_gradient_norms(self.batch)
            with self.writer.as_default(step=step):
                for name, value in norms.items():
                    tf.summary.scalar(f"grad_norm/{name}", value)


class Trainer:
    """Trains `model` on `ds` with `config`, writing checkpoints and TensorBoard logs to `out_dir`.

    Args:
      model: a `RetrievalModel` (or subclass), not yet compiled.
      ds: the processed dataset.
      config: `TrainConfig`.
      out_dir: the run folder (`checkpoints/` and `tensorboard/` go below it).
      evaluator: `(model, EvalSplit) -> (metrics, ranked)`; default `U2IEvaluator`.
      map_fn: optional per-batch transform for the training pipeline (plugins' augmentation).
      callbacks: extra Keras callbacks (plugins' mining); they may use `trainer.writer`.
    """

    def __init__(self, model, ds: ProcessedDataset, config: TrainConfig, out_dir: str | Path,
                 evaluator=None, map_fn=None, log=None, callbacks=()):
        self.model = model
        self.ds = ds
        self.config = config
        self.out_dir = Path(out_dir)
        self.map_fn = map_fn
        self.callbacks = list(callbacks)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.evaluator = evaluator or U2IEvaluator(ds.item_category, config.top_n,
                                                   config.eval_batch_size, config.exclude_history)
        self.valid = ds.eval_split("valid", config.maxlen)
        self._test = None  # built on first use: selection runs never read the test split
        self.writer = tf.summary.create_file_writer(str(self.out_dir / "tensorboard"))
        self.optimizer_name = resolve_optimizer(config.optimizer, ds.num_items)
        self.log(f"optimizer: {self.optimizer_name} ({config.optimizer}, {ds.num_items} items)")
        model.compile(optimizer=make_optimizer(self.optimizer_name, config.learning_rate),
                      jit_compile=config.jit_compile)
        self._first_batch = next(iter(self._dataset(0)))
        model.build_from_batch(self._first_batch)
        model.optimizer.build(model.trainable_variables)
        self.keeper = CheckpointKeeper(model, self.out_dir / "checkpoints")

    def _dataset(self, start_step: int):
        c = self.config
        return make_train_dataset(self.ds, batch_size=c.batch_size, maxlen=c.maxlen, seed=c.seed,
                                  sampler=c.sampler, start_step=start_step, map_fn=self.map_fn)

    def fit(self) -> RunState:
        """Trains until early stopping or `max_steps`, resuming from a checkpoint if one exists."""
        c = self.config
        state = self.keeper.restore() or RunState()
        if state.evals_done:
            self.log(f"resuming from step {state.evals_done * c.eval_every} "
                     f"(checkpoint {state.checkpoint})")
        if state.finished:
            self.log("training already finished; evaluating the best checkpoint")
            return state
        for callback in self.callbacks:  # plugins whose schedule depends on the run's progress
            if hasattr(callback, "attach_state"):
                callback.attach_state(state)
        total_evals = math.ceil(c.max_steps / c.eval_every)
        epochs_per_pass = steps_per_epoch(self.ds, c.sampler, c.batch_size)
        self.log(f"training {self.model.encoder_name}: up to {c.max_steps} steps, valid every "
                 f"{c.eval_every} steps ({c.eval_every / epochs_per_pass:.1f} epochs of "
                 f"{epochs_per_pass} steps), patience {c.patience}")
        self.model.fit(self._dataset(state.evals_done * c.eval_every),
                       steps_per_epoch=c.eval_every, epochs=total_evals,
                       initial_epoch=state.evals_done, verbose=c.verbose,
                       callbacks=[LossLogger(self.writer, c.log_every), *self.callbacks,
                                  *self._monitors(), ValidationCallback(self, state)])
        if not state.finished:  # fit ran all epochs without the callback flagging the end
            state.finished = True
            self.keeper.save(state)
        self.writer.flush()
        return state

    def _monitors(self) -> list:
        if self.config.grad_norm_every <= 0:
            return []
        return [GradientNormLogger(self.writer, self.config.grad_norm_every, self._first_batch)]

    @property
    def test(self) -> EvalSplit:
        if self._test is None:
            self._test = self.ds.eval_split("test", self.config.maxlen)
        return self._test

    def evaluate_best(self, split: str = "test"):
        """Loads the best weights and evaluates `split` once."""
        self.keeper.load_best()
        return self.evaluator(self.model, self.test if split == "test" else self.valid)
