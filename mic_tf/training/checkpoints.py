"""Crash-safe run state: the latest checkpoint (model + optimizer) and the best weights.

`checkpoints/latest/` is a `tf.train.CheckpointManager` folder (it writes each checkpoint under a
temporary name and updates its index last); `checkpoints/state.json` (written atomically after the
checkpoint) records how many evaluations are done, the best validation score and the patience
counter; `checkpoints/best.weights.h5` holds the best weights so far. A run restarted with the
same command restores all three and continues from the next training step.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import tensorflow as tf

from mic_tf.utils.io import atomic_write_json


@dataclasses.dataclass
class RunState:
    """Progress of a training run, persisted beside the checkpoint."""

    evals_done: int = 0  # evaluation periods completed (global step = evals_done * eval_every)
    best_score: float = -1.0  # best validation recall@50 so far
    best_eval: int = -1  # evaluation index that gave it
    bad_evals: int = 0  # evaluations since the last improvement
    finished: bool = False  # training ended (early stop or max_steps)
    checkpoint: str = ""  # the latest checkpoint's path prefix
    best_valid: dict = dataclasses.field(default_factory=dict)  # metrics of the best evaluation
    plateau_step: int = -1  # step of the first evaluation without improvement (-1: none yet)
    mining_started_at: int = -1  # step of the first nearest-neighbour mining (MIC; -1: none yet)
    loss_reference: float = -1.0  # the first period's basic loss (patience_loss_drop; -1: unset)
    loss_fell_at: int = -1  # step from which patience counts (patience_loss_drop; -1: not yet)


class CheckpointKeeper:
    """Saves and restores `RunState`, the latest checkpoint and the best weights of a model."""

    def __init__(self, model, folder: str | Path):
        self.model = model
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.folder / "latest"),
                                                  max_to_keep=2)
        self.state_path = self.folder / "state.json"
        self.best_path = self.folder / "best.weights.h5"

    def restore(self) -> RunState | None:
        """Restores the latest checkpoint named by state.json; None when there is none."""
        if not self.state_path.exists():
            return None
        state = RunState(**json.loads(self.state_path.read_text()))
        if state.checkpoint:
            self.checkpoint.restore(state.checkpoint).assert_existing_objects_matched()
        return state

    def save(self, state: RunState) -> None:
        state.checkpoint = self.manager.save()
        atomic_write_json(self.state_path, dataclasses.asdict(state))

    def save_best(self) -> None:
        # Keras insists on the `.weights.h5` suffix, so the temporary name keeps it.
        tmp = self.folder / f".best.{os.getpid()}.weights.h5"
        self.model.save_weights(str(tmp))
        os.replace(tmp, self.best_path)

    def load_best(self) -> None:
        self.model.load_weights(str(self.best_path))
