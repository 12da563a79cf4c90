"""Wiring of the MIC plugin into a run: the model, the view pipeline and the mining callback."""

from __future__ import annotations

import dataclasses
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from mic_tf.data.dataset import ProcessedDataset
from mic_tf.mic.mining import MiningConfig, mine
from mic_tf.mic.model import UU_ANCHORS
from mic_tf.mic.perturbation import make_view_fn
from mic_tf.utils.checks import boolean, check_fields, choice, integer, number


@dataclasses.dataclass
class MICConfig:
    """MIC hyper-parameters (paper defaults where it gives them)."""

    mic_lambda: float = 0.7
    w_uv: float = 1.0
    w_vv: float = 1.0
    w_uu: float = 1.0
    temperature: float = 0.1
    dropout: float = 0.2
    p_mask: float = 0.2
    mining_every: int = 100
    # First mining: at step `mining_start` (0: at `mining_every`, the earlier behaviour), or with
    # `mining_on_plateau` at the first validation that does not improve; then every
    # `mining_every` steps. Neighbours of an untrained model are noise (spec 3.3).
    mining_start: int = 0
    mining_on_plateau: bool = False
    mined_weight: float | None = None  # None: every positive pair alike; else (info_nce)
    contrastive_start: int = 0  # contrastive part off before this step, then ...
    ramp_steps: int = 0  # ... ramped linearly to full weight over this many steps
    uu_anchor: str = "mean"  # multi-interest user vector of L_uu: "mean" or "readout"
    single_channel_heads: bool = True  # L_uu / L_vv in their own projection heads' space
    mining: MiningConfig = dataclasses.field(default_factory=MiningConfig)

    def validate(self) -> None:
        check_fields(self, MIC_CHECKS)
        self.mining.validate()


# The allowed value of every MICConfig field (a new field: one more line). dropout 1 would drop
# everything (and divide by zero in the rescaling); p_mask 1 is fine: the last item survives.
MIC_CHECKS = (
    number("mic_lambda", 0, 1), number("w_uv", 0), number("w_vv", 0), number("w_uu", 0),
    number("temperature", 0, low_open=True), number("dropout", 0, 1, high_open=True),
    number("p_mask", 0, 1), integer("mining_every", 1), integer("mining_start", 0),
    boolean("mining_on_plateau"), number("mined_weight", 0, optional=True),
    integer("contrastive_start", 0), integer("ramp_steps", 0), choice("uu_anchor", UU_ANCHORS),
    boolean("single_channel_heads"),
)


def single_vectors(vectors: np.ndarray) -> np.ndarray:
    """`[U, D]` as is; `[U, K, D]` -> the renormalised mean of the L2-normalised interests (one
    vector per user for kNN, clustering and the user bank: the same vector as `MICModel`'s L_uu
    anchor with `uu_anchor="mean"` and as U2U inference's `reduce_users`)."""
    if vectors.ndim == 2:
        return vectors
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    mean = unit.mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


class MiningCallback(keras.callbacks.Callback):
    """Mines neighbours for the first time at step `start` (0: at `every`), or with `on_plateau`
    at the first validation without improvement, then at every multiple of `every`. Until then
    the mined lists stay empty (masked out: the losses use the views alone).

    The step of the first mining lives in the run's `RunState` (`attach_state`), so a resumed
    run mines exactly when the uninterrupted one did.
    """

    def __init__(self, ds: ProcessedDataset, maxlen: int, every: int, cfg: MiningConfig,
                 writer=None, log=None, batch_size: int = 4096, start: int = 0,
                 on_plateau: bool = False):
        super().__init__()
        self.histories, _ = ds.recent_histories("train", maxlen)
        r = ds.split_range("train")
        self.user_features = ds.user_features[r.start:r.stop]
        self.every, self.cfg, self.writer = every, cfg, writer
        self.start = start if start > 0 else every
        self.on_plateau = on_plateau
        self.batch_size = batch_size
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.state = None

    def attach_state(self, state) -> None:
        """The trainer's `RunState` (plateau step, first mining step; persisted)."""
        self.state = state

    def _started(self, step: int) -> bool:
        """Whether mining has started by `step`; records the first mining step."""
        state = self.state
        if state is None:  # no trainer (benchmarks): a local record
            from mic_tf.training.checkpoints import RunState
            state = self.state = RunState()
        if state.mining_started_at >= 0:
            return True
        start = state.plateau_step if self.on_plateau else self.start
        if start < 0 or step < start:
            return False
        state.mining_started_at = step
        return True

    def due(self, step: int) -> bool:
        """Whether to mine after global step `step` (records the first mining step)."""
        first = self.state is None or self.state.mining_started_at < 0
        return self._started(step) and (first or step % self.every == 0)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.due(step):
            self.mine(step)

    def compute(self, step: int, model=None):
        """Embeds the training users and items with `model` (default: the callback's) and mines
        their neighbours; returns `(MinedNeighbours, user bank [U, D], seconds)` and logs them.
        The multi-worker loop runs this on the chief and broadcasts the result."""
        model = self.model if model is None else model
        start = time.perf_counter()
        users = single_vectors(model.predict(
            {"history": self.histories, "user_features": self.user_features},
            batch_size=self.batch_size, verbose=0))
        items = keras.ops.convert_to_numpy(model.item_table())
        users_joint = keras.ops.convert_to_numpy(model.user_head(users))
        items_joint = keras.ops.convert_to_numpy(model.item_head(items))
        embed_seconds = time.perf_counter() - start
        mined = mine(users, items, users_joint, items_joint, self.cfg)
        total = time.perf_counter() - start
        seconds = {"embed": round(embed_seconds, 3), **mined.seconds, "total": round(total, 3)}
        self.log(f"step {step}: mined neighbours of {len(users)} users and {len(items) - 1} items "
                 f"in {total:.2f}s ({seconds})")
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for name, value in seconds.items():
                    tf.summary.scalar(f"mining/{name}_seconds", value)
        return mined, users, seconds

    def mine(self, step: int) -> dict:
        mined, users, seconds = self.compute(step)
        self.model.assign_mined(mined, users)
        return seconds


def mic_pipeline_fn(cfg: MICConfig, perturbation: bool, seed: int, has_category: bool):
    """The tf.data view function, or None when the perturbation is ablated."""
    return make_view_fn(cfg.p_mask, seed, has_category) if perturbation else None
