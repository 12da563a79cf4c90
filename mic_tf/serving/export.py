"""`export`: a finished run of `experiments/run.py` -> a serving bundle (`bundle.py`).

The bundle's user tower is exported afresh from the run's best weights (the ones its test metrics
come from), and every training user's vector is computed through that same SavedModel, so that a
training user's vector online (the tower over the same history) is the one its neighbours were
mined with.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from mic_tf.inference.datastore import Datastore
from mic_tf.inference.score import InferenceConfig
from mic_tf.serving.bundle import BundleParts, check_target, copy_tower, write_bundle
from mic_tf.serving.errors import BundleError

# Exact search up to this many items (offline evaluation's choice); above it IVF with the
# nprobe that reaches U2I recall >= 0.95 against exact search at 1M items (benchmarks/README).
EXACT_LIMIT = 100_000
SERVING_INDEX_PARAMS = {"ivf": {"nprobe": 32}, "hnsw": {}, "flat": {}}
POPULAR_KEPT = 1000


def serving_config(cfg) -> InferenceConfig:
    """The inference a run was evaluated with offline (`experiment.make_evaluator`): its own
    `InferenceConfig` with `top_n` = the run's N and its channel ablation; a run evaluated by
    U2I (`eval_mode` u2i, the baseline's default) is U2I ranked by the basic score alone, as
    ComiRec's evaluation."""
    inference = dataclasses.replace(cfg.inference, top_n=cfg.train.top_n)
    if cfg.resolved_eval_mode() == "u2i":
        return dataclasses.replace(inference, use_u2u=False, use_i2i=False, lam_mic=0.0,
                                   lam_div=0.0)
    if cfg.ablation in ("-u2u", "-u2i", "-i2i"):
        return InferenceConfig.for_ablation(cfg.ablation, **dataclasses.asdict(inference))
    return inference


def index_choice(index_type: str, num_items: int, params: dict | None = None):
    """`auto` -> exact ("flat") up to EXACT_LIMIT items, IVF (nprobe 32) above."""
    if index_type == "auto":
        index_type = "flat" if num_items <= EXACT_LIMIT else "ivf"
    if index_type not in SERVING_INDEX_PARAMS:
        raise BundleError(f"index_type must be auto, flat, ivf or hnsw, got {index_type!r}")
    return index_type, {**SERVING_INDEX_PARAMS[index_type], **(params or {})}


def last_items_csr(items: np.ndarray, offsets: np.ndarray, users: np.ndarray, cap: int):
    """The last `cap` items of each listed user's CSR sequence, as CSR (vectorised)."""
    starts, ends = offsets[users], offsets[users + 1]
    starts = np.maximum(starts, ends - cap)
    lengths = ends - starts
    out_offsets = np.zeros(len(users) + 1, np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    owner = np.repeat(np.arange(len(users)), lengths)
    pos = starts[owner] + np.arange(out_offsets[-1]) - out_offsets[owner]
    return items[pos].astype(np.int32), out_offsets


def similar_training_users(ds: Datastore, m1: int, batch: int = 65536) -> np.ndarray:
    """`[U, min(M1, U - 1)]` int32: each training user's nearest training users by cosine, itself
    excluded (`channels.similar_users` with `exclude`, the online U2U of a query user who is in
    the datastore), in batches."""
    from mic_tf.inference.channels import similar_users

    width = min(m1, ds.num_users)
    out = np.full((ds.num_users, width), -1, np.int32)
    for lo in range(0, ds.num_users, batch):
        ids = np.arange(lo, min(lo + batch, ds.num_users))
        out[ids] = similar_users(ds, ds.user_vectors[ids], m1, exclude=ids)
    return out


def popular_items(popularity: np.ndarray, keep: int = POPULAR_KEPT) -> np.ndarray:
    """`[P, 2]` (item, count) by count descending, then id; items never clicked are left out."""
    ids = np.arange(1, len(popularity))
    counts = popularity[1:]
    order = np.lexsort((ids, -counts))[:keep]
    order = order[counts[order] > 0]
    return np.stack([ids[order], counts[order]], axis=1).astype(np.int64)


def export_run(run_dir, bundle_dir, index_type: str = "auto", index_params: dict | None = None,
               version: str | None = None, history_until: float = 0.0, data_dir=None,
               log=print) -> dict:
    """Exports a finished run as a serving bundle.

    Args:
      run_dir: a finished run folder (flags.json, checkpoints/best.weights.h5).
      bundle_dir: the bundle folder to write (a new folder, or an older bundle to replace).
      index_type: "auto" (see `index_choice`), "flat", "ivf" or "hnsw".
      index_params: overrides of the index defaults (e.g. {"nprobe": 64}).
      version: the version id (default: UTC time + random suffix).
      history_until: see `BundleParts.history_until` (the datasets here keep no timestamps).
      data_dir: processed-data folder (default: the run's own).

    Returns:
      `{"bundle_dir", "version", "seconds", ...counts}`.
    """
    start = time.perf_counter()
    bundle_dir = Path(bundle_dir)
    check_target(bundle_dir)  # fail before the expensive part (even TensorFlow's import)
    import keras

    from mic_tf.evaluation.checkpoint import load_run
    from mic_tf.models.losses import score_geometry
    from mic_tf.serving.bundle import Bundle
    from mic_tf.serving.tower import UserTower

    run = load_run(run_dir, data_dir=data_dir)
    cfg, data = run.config, run.ds
    inference = serving_config(cfg)
    maxlen = cfg.train.maxlen
    cap = max(maxlen, inference.m, inference.m2)
    kind, params = index_choice(index_type, data.num_items, index_params)
    tower_tmp = bundle_dir.with_name(f".{bundle_dir.name}.tower-export")
    shutil.rmtree(tower_tmp, ignore_errors=True)  # a crashed export's leftover
    run.model.export_user_tower(str(tower_tmp))
    try:
        feats = data.user_features if cfg.use_user_features else None
        tower = UserTower(tower_tmp, maxlen, 0 if feats is None else feats.shape[1])
        train = np.arange(len(data.split_range("train")))
        histories, _ = data.recent_histories("train", maxlen)
        users = tower.embed(histories, None if feats is None else feats[train])
        hist_items, hist_offsets = last_items_csr(data.seq_items, data.seq_offsets, train, cap)
        ds = Datastore(users, keras.ops.convert_to_numpy(run.model.item_table()), hist_items,
                       hist_offsets, data.item_category, index_type=kind, index_params=params,
                       use_gpu=False, item_score=score_geometry(cfg.basic_loss))
        ds.build_item_neighbours(inference.m3)
        others = np.arange(len(train), data.num_users)
        other_items, other_offsets = last_items_csr(data.seq_items, data.seq_offsets, others, cap)

        parts = BundleParts(
            datastore=ds, write_tower=copy_tower(tower_tmp), user_raw_ids=list(data.user_raw_ids),
            item_raw_ids=np.asarray(data.item_raw_ids, dtype=object),
            other_history_items=other_items, other_history_offsets=other_offsets,
            similar_users=similar_training_users(ds, inference.m1),
            popular=popular_items(data.item_popularity("train")), inference=inference,
            maxlen=maxlen, history_cap=cap, user_features=feats, history_until=history_until,
            source={"run_dir": str(Path(run_dir).resolve()), "dataset": data.name,
                    "encoder": cfg.encoder, "plugin": cfg.plugin, "ablation": cfg.ablation,
                    "basic_loss": cfg.basic_loss})
        write_bundle(bundle_dir, parts, version)
    finally:
        shutil.rmtree(tower_tmp, ignore_errors=True)
    bundle = Bundle(bundle_dir)
    seconds = round(time.perf_counter() - start, 2)
    log(f"exported {bundle_dir} version {bundle.version}: {ds.num_items} items, {ds.num_users} "
        f"training users, {len(others)} other users, index {kind} {params}, {seconds} s")
    return {"bundle_dir": str(bundle_dir), "version": bundle.version, "seconds": seconds,
            "num_items": ds.num_items, "num_train_users": ds.num_users,
            "num_users": data.num_users, "index_type": kind}
