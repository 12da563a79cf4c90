"""ComiRec-DR (dynamic-routing capsules), as in ComiRec's `CapsuleNetwork(bilinear_type=2)`."""

import keras
import tensorflow as tf
from keras import ops

from mic_tf.models.towers import UserTower


def squash(s):
    """`||s||^2 / (1 + ||s||^2) / sqrt(||s||^2 + 1e-9) * s` over the last axis."""
    norm2 = ops.sum(ops.square(s), axis=-1, keepdims=True)
    return norm2 / (1.0 + norm2) / ops.sqrt(norm2 + 1e-9) * s


@keras.saving.register_keras_serializable(package="mic")
class ComiRecDR(UserTower):
    """`[B, L, D]` history -> `[B, K, D]` interest capsules.

    Per-position, per-interest maps `W [L, K*D, D]` (normal init, stddev 1) give `u_hat
    [B, K, L, D]`. Routing logits start at 0; `routing_iterations` rounds of `c = softmax_K(b)`
    (zeroed at padding), `v = squash(c @ u_hat)`, `b += u_hat . v`. As in ComiRec, every round but
    the last routes a `stop_gradient` copy of `u_hat`.
    """

    def __init__(self, item_embedding, embedding_dim, maxlen, num_interests=4,
                 routing_iterations=3, **kwargs):
        super().__init__(item_embedding, embedding_dim, maxlen, **kwargs)
        self.num_interests = num_interests
        self.routing_iterations = routing_iterations

    def build(self, input_shape=None):
        d, k = self.embedding_dim, self.num_interests
        self.bilinear = self.add_weight(shape=(self.maxlen, k * d, d),
                                        initializer=keras.initializers.RandomNormal(stddev=1.0),
                                        name="capsule_weights")
        super().build(input_shape)

    def encode(self, history_emb, mask, training=False):
        b_size = tf.shape(history_emb)[0]
        k, d, length = self.num_interests, self.embedding_dim, self.maxlen
        # The per-position maps as one batched matmul over L, `[L, B, D] x [L, D, K*D]`, and
        # matmuls in the routing: `einsum` lowered these to slower contractions on the CPU
        # (encoder forward + backward 9.5 -> 7.5 ms with XLA, 14.1 -> 8.4 ms without).
        u = tf.matmul(tf.transpose(history_emb, (1, 0, 2)), self.bilinear, transpose_b=True)
        u_hat = tf.transpose(tf.reshape(u, (length, b_size, k, d)), (1, 2, 0, 3))  # [B, K, L, D]
        u_hat_fixed = tf.stop_gradient(u_hat)
        logits = tf.zeros((b_size, k, length), dtype=history_emb.dtype)
        pad = tf.equal(mask[:, None, :], 0)
        interests = None
        for i in range(self.routing_iterations):
            weights = tf.where(pad, 0.0, tf.nn.softmax(logits, axis=1))  # over interests
            source = u_hat if i == self.routing_iterations - 1 else u_hat_fixed
            pooled = tf.squeeze(tf.matmul(weights[:, :, None, :], source), 2)  # [B, K, D]
            interests = squash(pooled)
            if i < self.routing_iterations - 1:
                logits = logits + tf.squeeze(tf.matmul(u_hat_fixed, interests[..., None]), -1)
        # K = 1 is a single-vector model: [B, D], as UserTower's contract says (no readout)
        return interests[:, 0] if k == 1 else interests

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests,
                "routing_iterations": self.routing_iterations}
