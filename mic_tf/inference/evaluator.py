"""Offline evaluation of a MIC model through cross-channel inference (spec 4, `--plugin=mic`).

Each evaluation rebuilds the datastore from the current model (training users' vectors from their
last `maxlen` items, the item table, the training users' time-ordered histories), recommends for
the valid or test users in batches, and computes the usual metrics on the ranked top-N. It also
reports, per channel, the share of each user's targets found among that channel's candidates
(`candidate_recall_u2i`, ...), so a user can see what each channel contributes.
"""

from __future__ import annotations

import keras
import numpy as np

from mic_tf.data.dataset import EvalSplit, ProcessedDataset
from mic_tf.evaluation.metrics import ranking_metrics
from mic_tf.inference.datastore import Datastore
from mic_tf.inference.score import CHANNELS, CrossChannelInference, InferenceConfig


def candidate_recall(retrieved: np.ndarray, split: EvalSplit) -> float:
    """Mean over users of |targets (with repeats) found in `retrieved` row| / |targets|."""
    users = np.repeat(np.arange(len(split)), np.diff(split.target_offsets))
    stride = np.int64(max(int(retrieved.max(initial=0)), int(split.targets.max(initial=0))) + 1)
    keys = np.unique((np.arange(len(split))[:, None] * stride + retrieved)[retrieved > 0])
    hit = np.isin(users * stride + split.targets, keys)
    per_user = np.bincount(users, weights=hit, minlength=len(split)) / np.diff(split.target_offsets)
    return float(per_user.mean())


class CrossChannelEvaluator:
    """`(model, EvalSplit) -> (metrics, ranked)`, like `U2IEvaluator`, through U2I + U2U + I2I."""

    def __init__(self, ds: ProcessedDataset, maxlen: int, config: InferenceConfig,
                 index_type: str = "flat", index_params: dict | None = None,
                 batch_size: int = 2048, query_batch: int = 1024, item_score: str = "dot"):
        r = ds.split_range("train")
        self.histories, _ = ds.recent_histories("train", maxlen)
        self.user_features = ds.user_features[r.start:r.stop]
        lo, hi = ds.seq_offsets[r.start], ds.seq_offsets[r.stop]
        self.history_items = ds.seq_items[lo:hi]
        self.history_offsets = ds.seq_offsets[r.start:r.stop + 1] - lo
        self.item_category = ds.item_category
        self.config = config
        self.index_type, self.index_params = index_type, index_params
        self.batch_size, self.query_batch = batch_size, query_batch
        self.item_score = item_score  # the basic model's own score (spec 4): "dot" or "cosine"
        self.last_datastore = None

    def _embed(self, model, histories, user_features):
        return model.predict({"history": histories, "user_features": user_features},
                             batch_size=self.batch_size, verbose=0)

    def build_datastore(self, model) -> Datastore:
        users = self._embed(model, self.histories, self.user_features)
        items = keras.ops.convert_to_numpy(model.item_table())
        self.last_datastore = Datastore(users, items, self.history_items, self.history_offsets,
                                        self.item_category, index_type=self.index_type,
                                        index_params=self.index_params,
                                        item_score=self.item_score)
        return self.last_datastore

    def __call__(self, model, split: EvalSplit):
        datastore = self.build_datastore(model)
        queries = self._embed(model, split.histories, split.user_features)
        return self._rank(datastore, queries, split, self.config)

    def sweep(self, model, split: EvalSplit, configs) -> list[dict]:
        """The metrics of `split` under each `InferenceConfig` of `configs`, from ONE datastore
        and one embedding of the users (a grid over lam_mic, lam_div, the M's, ...)."""
        datastore = self.build_datastore(model)
        queries = self._embed(model, split.histories, split.user_features)
        return [self._rank(datastore, queries, split, cfg)[0] for cfg in configs]

    def _rank(self, datastore: Datastore, queries, split: EvalSplit, config: InferenceConfig):
        inference = CrossChannelInference(datastore, config)
        ranked, channels = [], {name: [] for name in CHANNELS}
        for lo in range(0, len(split), self.query_batch):
            hi = lo + self.query_batch
            result = inference.recommend(queries[lo:hi], split.histories[lo:hi])
            ranked.append(result.items)
            for name, retrieved in result.channels.items():
                channels[name].append(retrieved)
        ranked = np.concatenate(ranked)
        metrics = ranking_metrics(ranked, split.targets, split.target_offsets, self.item_category)
        for name, parts in channels.items():
            if parts:
                width = max(p.shape[1] for p in parts)
                padded = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])))
                                         for p in parts])
                metrics[f"candidate_recall_{name}"] = candidate_recall(padded, split)
        return metrics, ranked
