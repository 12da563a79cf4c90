"""Moved to `mic_tf.utils.faiss_index` (one Faiss layer for evaluation, mining, inference and
serving); this module keeps the old import path."""

from mic_tf.utils.faiss_index import _GPU_MAX_K, ItemIndex, sort_by_score  # noqa: F401

_sort_by_score = sort_by_score  # the old private name (tests, scripts)
