"""The user tower online: the bundle's SavedModel over a user's current history."""

from __future__ import annotations

import numpy as np


def recent_padded(histories, maxlen: int) -> np.ndarray:
    """The tower's input: each history's last `maxlen` items, right-padded with 0 (as the
    training and evaluation inputs, `ProcessedDataset.recent_histories`).

    Args:
      histories: a list of `[L_b]` item-id arrays (oldest first; no padding inside).
      maxlen: the tower's L.

    Returns:
      `[B, maxlen]` int32.
    """
    out = np.zeros((len(histories), maxlen), np.int32)
    for row, h in enumerate(histories):  # B rows (one online), not a loop over candidates
        tail = np.asarray(h)[-maxlen:]
        out[row, :len(tail)] = tail
    return out


def configure_threads(intra_op: int, inter_op: int) -> None:
    """TensorFlow's thread pools (only before TF runs its first op; later calls are ignored):
    one intra-op thread suits batch-1 requests served from several request threads."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        pass


class UserTower:
    """`serve(history [B, L] int32 [, user_features [B, F] int32])` of a SavedModel.

    Args:
      path: the SavedModel folder (`RetrievalModel.export_user_tower`).
      maxlen: L.
      num_user_features: F (0 when the tower takes none).
    """

    def __init__(self, path, maxlen: int, num_user_features: int = 0):
        import tensorflow as tf

        self._tf = tf
        self._module = tf.saved_model.load(str(path))
        self.maxlen, self.num_user_features = int(maxlen), int(num_user_features)
        # The endpoint's one concrete function, called directly: the polymorphic `serve`
        # re-binds and re-checks its arguments on every call (half of a batch-1 call's Python
        # time). Same graph, same outputs.
        spec = [tf.TensorSpec([None, self.maxlen], tf.int32)]
        if self.num_user_features:
            spec.append(tf.TensorSpec([None, self.num_user_features], tf.int32))
        self._serve = self._module.serve.get_concrete_function(*spec)

    def embed(self, histories, user_features=None, batch: int = 1024) -> np.ndarray:
        """User vectors of a list of histories: `[B, D]` or `[B, K, D]` float32.

        Args:
          histories: a list of `[L_b]` item-id arrays, or a `[B, maxlen]` right-padded array.
          user_features: `[B, F]` int32 (0 = unknown), required when F > 0.
          batch: rows per call (bounds memory when exporting many users).
        """
        tf = self._tf
        x = (np.asarray(histories, np.int32) if isinstance(histories, np.ndarray)
             and histories.ndim == 2 else recent_padded(histories, self.maxlen))
        if x.shape[1] != self.maxlen:
            raise ValueError(f"histories must be [B, {self.maxlen}], got {x.shape}")
        feats = None
        if self.num_user_features:
            feats = (np.zeros((len(x), self.num_user_features), np.int32) if user_features is None
                     else np.asarray(user_features, np.int32))
        parts = []
        for lo in range(0, len(x), batch):
            args = [tf.constant(x[lo:lo + batch])]
            if feats is not None:
                args.append(tf.constant(feats[lo:lo + batch]))
            parts.append(self._serve(*args).numpy())
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)
