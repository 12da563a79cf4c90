"""Re-evaluating a finished run's best checkpoint without retraining (Table 4, Figures 4 and 5).

A run folder written by `experiments/run.py` holds `flags.json` (every resolved setting) and
`checkpoints/best.weights.h5`. `load_run` rebuilds the same model and data split from them;
`evaluate_u2i` / `evaluate_cross_channel` rank a split's users through ComiRec's U2I path (with
its greedy diversity coefficient if asked) or through MIC's cross-channel inference with any
`InferenceConfig` (channel ablations, a `lam_div` sweep); `representation_metrics` gives the
alignment / uniformity of Figure 5.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np

from mic_tf.data.dataset import EvalSplit, ProcessedDataset
from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.protocol import ProtocolParams
from mic_tf.evaluation.metrics import alignment, ranking_metrics, uniformity
from mic_tf.evaluation.retrieval import ItemIndex
from mic_tf.experiment import ExperimentConfig, build_model
from mic_tf.inference.datastore import reduce_users
from mic_tf.inference.evaluator import CrossChannelEvaluator
from mic_tf.inference.score import InferenceConfig, greedy_pick
from mic_tf.models.losses import score_geometry
from mic_tf.mic.mining import MiningConfig
from mic_tf.mic.plugin import MICConfig
from mic_tf.training.trainer import TrainConfig


@dataclasses.dataclass
class LoadedRun:
    """A finished run: its model with the best weights, its data split and its flags."""

    model: keras.Model
    ds: ProcessedDataset
    config: ExperimentConfig
    flags: dict
    run_dir: Path


def _pick(cls, values: dict, prefix: str = "", skip=()) -> dict:
    return {f.name: values[prefix + f.name] for f in dataclasses.fields(cls)
            if f.name not in skip and prefix + f.name in values}


def config_from_flags(values: dict) -> ExperimentConfig:
    """The `ExperimentConfig` of a run from its `flags.json` (the keys `run.py` writes)."""
    mic = MICConfig(**_pick(MICConfig, values, skip=("mining",)),
                    mining=MiningConfig(**_pick(MiningConfig, values, "mining_")))
    return ExperimentConfig(**_pick(ExperimentConfig, values, skip=("train", "mic", "inference")),
                            train=TrainConfig(**_pick(TrainConfig, values)), mic=mic,
                            inference=InferenceConfig(**_pick(InferenceConfig, values,
                                                              "inference_")))


def load_run(run_dir, data_dir=None, seal_test: bool = False) -> LoadedRun:
    """Rebuilds a finished run's model (best weights) and processed data.

    Args:
      run_dir: a folder written by `experiments/run.py` (flags.json, checkpoints/).
      data_dir: processed-data folder (default: the run's own `data_dir`).
      seal_test: seal the data's test split (selection: nothing may read its targets).
    """
    run_dir = Path(run_dir)
    flags_path, weights = run_dir / "flags.json", run_dir / "checkpoints" / "best.weights.h5"
    for path in (flags_path, weights):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {run_dir} is not a finished run of "
                                    f"experiments/run.py")
    values = json.loads(flags_path.read_text())
    ds = prepare_dataset(values["dataset"], data_dir=data_dir or values.get("data_dir"),
                         params=ProtocolParams(split_seed=values["split_seed"]), verbose=False)
    if seal_test:
        ds.seal("test")
    cfg = config_from_flags(values)
    model = build_model(cfg, ds)
    probe = ds.eval_split("valid", cfg.train.maxlen)  # any two users build the variables
    model.build_from_batch({"history": probe.histories[:2],
                            "user_features": probe.user_features[:2]})
    model.load_weights(str(weights))
    return LoadedRun(model, ds, cfg, values, run_dir)


def _user_vectors(run: LoadedRun, split: EvalSplit) -> np.ndarray:
    return run.model.predict({"history": split.histories, "user_features": split.user_features},
                             batch_size=2048, verbose=0)


def comirec_pool(users: np.ndarray, items: np.ndarray, top_n: int):
    """ComiRec's candidate pool: each interest's top_n by inner product, merged (best score per
    item). Returns `[B, P]` scores and ids sorted by ascending id (0 = empty)."""
    index = ItemIndex(items, use_gpu=False)
    u = users if users.ndim == 3 else users[:, None, :]
    b, k, d = u.shape
    scores, ids = index.search(u.reshape(b * k, d), top_n)
    scores, ids = scores.reshape(b, k * top_n), ids.reshape(b, k * top_n)
    if k > 1:
        scores, ids = ItemIndex._keep_best_copy(scores, ids)
    order = np.argsort(np.where(ids == 0, np.iinfo(np.int64).max, ids), axis=1, kind="stable")
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def evaluate_u2i(run: LoadedRun, split: str = "test", coef: float = 0.0) -> dict:
    """ComiRec's evaluation (inner-product U2I); with `coef` > 0 its greedy controllable
    aggregation `score - coef * (picked items of the same category)` over the pooled top-N of
    every interest (ComiRec applies it to multi-interest models; here any encoder)."""
    es = run.ds.eval_split(split, run.config.train.maxlen)
    users = _user_vectors(run, es)
    items = keras.ops.convert_to_numpy(run.model.item_table())
    top_n = run.config.train.top_n
    scores, ids = comirec_pool(users, items, top_n)
    ranked, _ = greedy_pick(scores.astype(np.float64), ids, run.ds.item_category[ids], top_n,
                            coef, penalty="count")
    return ranking_metrics(ranked, es.targets, es.target_offsets, run.ds.item_category)


def evaluate_cross_channel(run: LoadedRun, inference: InferenceConfig | None = None,
                           split: str = "test") -> dict:
    """MIC's cross-channel inference (spec 4) with `inference` (default: the run's own)."""
    cfg = inference or dataclasses.replace(run.config.inference, top_n=run.config.train.top_n)
    es = run.ds.eval_split(split, run.config.train.maxlen)
    evaluator = CrossChannelEvaluator(run.ds, run.config.train.maxlen, cfg,
                                      index_type=run.config.index_type,
                                      item_score=score_geometry(run.config.basic_loss))
    metrics, _ = evaluator(run.model, es)
    return metrics


def representation_metrics(run: LoadedRun, split: str = "test") -> dict:
    """Figure 5's geometry in the retrieval space (Wang & Isola, alpha = t = 2).

    `ui_alignment`: the split's (user, target item) pairs, a multi-interest user represented by
    the interest with the largest inner product with the target (the training readout);
    `uu_uniformity`: the training users (multi-interest: renormalised mean of normalised
    interests, as in the user datastore); `ii_uniformity`: every item vector.
    """
    es = run.ds.eval_split(split, run.config.train.maxlen)
    items = keras.ops.convert_to_numpy(run.model.item_table())
    users = _user_vectors(run, es)
    owner = np.repeat(np.arange(len(es)), np.diff(es.target_offsets))
    u = users[owner]
    t = items[es.targets]
    if u.ndim == 3:
        best = np.einsum("bkd,bd->bk", u, t).argmax(axis=1)
        u = u[np.arange(len(u)), best]
    r = run.ds.split_range("train")
    train_hist, _ = run.ds.recent_histories("train", run.config.train.maxlen)
    train_users = run.model.predict({"history": train_hist,
                                     "user_features": run.ds.user_features[r.start:r.stop]},
                                    batch_size=2048, verbose=0)
    return {"ui_alignment": alignment(u, t), "uu_uniformity": uniformity(reduce_users(train_users)),
            "ii_uniformity": uniformity(items[1:])}
