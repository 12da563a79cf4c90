"""YouTube DNN as in ComiRec's `Model_DNN`: masked mean of the history, then a linear layer."""

import keras
from keras import ops

from mic_tf.models.towers import UserTower


@keras.saving.register_keras_serializable(package="mic")
class YouTubeDNN(UserTower):
    """`[B, L, D]` history -> `[B, D]`: sum / (count + 1e-9), then `Dense(D)` (no activation)."""

    def __init__(self, item_embedding, embedding_dim, maxlen, **kwargs):
        super().__init__(item_embedding, embedding_dim, maxlen, **kwargs)
        self.dense = keras.layers.Dense(embedding_dim, name="user_dense")

    def encode(self, history_emb, mask, training=False):
        mean = ops.sum(history_emb, axis=1) / (ops.sum(mask, axis=1, keepdims=True) + 1e-9)
        return self.dense(mean)
