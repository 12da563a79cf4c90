"""ComiRec-SA (self-attentive multi-interest extraction), as in ComiRec's `Model_ComiRec_SA`."""

import keras
from keras import ops

from mic_tf.models.towers import UserTower

_NEG_INF = -2.0 ** 32 + 1  # ComiRec's padding logit


@keras.saving.register_keras_serializable(package="mic")
class ComiRecSA(UserTower):
    """`[B, L, D]` history -> `[B, K, D]` interests.

    `A = softmax_L(Dense(K)(Dense(4D, tanh)(emb + pos)))` with padded positions at -2^32 + 1;
    interests = `A @ emb` (the values are the embeddings *without* the position embedding).
    """

    def __init__(self, item_embedding, embedding_dim, maxlen, num_interests=4, **kwargs):
        super().__init__(item_embedding, embedding_dim, maxlen, **kwargs)
        self.num_interests = num_interests
        self.hidden = keras.layers.Dense(4 * embedding_dim, activation="tanh", name="att_hidden")
        self.scores = keras.layers.Dense(num_interests, name="att_scores")

    def build(self, input_shape=None):
        self.position = self.add_weight(shape=(1, self.maxlen, self.embedding_dim),
                                        initializer="glorot_uniform", name="position_embedding")
        super().build(input_shape)

    def encode(self, history_emb, mask, training=False):
        logits = self.scores(self.hidden(history_emb + self.position))  # [B, L, K]
        logits = ops.transpose(logits, (0, 2, 1))  # [B, K, L]
        logits = ops.where(ops.equal(mask[:, None, :], 0), _NEG_INF, logits)
        attention = ops.softmax(logits, axis=-1)
        interests = ops.matmul(attention, history_emb)  # [B, K, D]
        # K = 1 is a single-vector model: [B, D], as UserTower's contract says (no readout)
        return interests[:, 0] if self.num_interests == 1 else interests

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests}
