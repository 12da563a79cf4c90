"""GRU4Rec as in ComiRec's `Model_GRU4REC`: a GRU over the history; the user is the last state."""

import keras
import tensorflow as tf
from keras import ops

from mic_tf.models.towers import UserTower


def unrolled_gru(inputs, kernel, recurrent_kernel, bias):
    """Every state of Keras' GRU (`reset_after=True`, zero initial state) over a static length.

    Same weights and equations as `keras.layers.GRU` (gate order z, r, h):
    `z = sigmoid(x W_z + b_z + h U_z + c_z)`, `r` likewise,
    `n = tanh(x W_n + b_n + r * (h U_n + c_n))`, `h' = z * h + (1 - z) * n`.

    Why not Keras' layer on the CPU: it runs a `while_loop` whose cell slices `h U` column-wise,
    and the gradients of those slices (dense `[B, 3H]` scatters, three per step) cost more than
    the recurrence's matrix products. Here the input projection of all L steps is one
    `[L * B, D] x [D, 3H]` product computed time-major (so each step's input is a contiguous
    row block), gates are `split` (whose gradient is a cheap concat), and the loop is unrolled
    over the static L, so the graph has no `while_loop` for XLA to trip on. 15-20% faster per
    training step on ml-100k (benchmarks/README.md).

    Args:
      inputs: `[B, L, D]` with a static L.
      kernel: `[D, 3H]`; recurrent_kernel: `[H, 3H]`; bias: `[2, 3H]` (input, recurrent).
    Returns:
      `[B, L, H]`, the state after each step.
    """
    steps, dim = inputs.shape[1], inputs.shape[2]
    units = recurrent_kernel.shape[0]
    x = tf.reshape(tf.transpose(inputs, [1, 0, 2]), [-1, dim])  # [L * B, D], time-major
    projected = tf.reshape(tf.matmul(x, kernel) + bias[0], [steps, -1, 3 * units])
    state = tf.zeros_like(projected[0, :, :units])  # [B, H]
    states = []
    for x_t in tf.unstack(projected):  # static L: unrolled
        inner = tf.matmul(state, recurrent_kernel) + bias[1]
        x_z, x_r, x_n = tf.split(x_t, 3, axis=1)
        h_z, h_r, h_n = tf.split(inner, 3, axis=1)
        z = tf.sigmoid(x_z + h_z)
        r = tf.sigmoid(x_r + h_r)
        candidate = tf.tanh(x_n + r * h_n)
        state = candidate + z * (state - candidate)  # = z * state + (1 - z) * candidate
        states.append(state)
    return tf.stack(states, axis=1)


def keras_gru_is_faster() -> bool:
    """On a GPU Keras' GRU runs the fused cuDNN kernel, which beats any unrolled graph."""
    return bool(tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable(package="mic")
class GRU4Rec(UserTower):
    """`[B, L, D]` right-padded history -> `[B, D]`, the GRU state after the last real item.

    ComiRec runs `dynamic_rnn` with `sequence_length`; here the GRU returns every state and the one
    at `length - 1` is gathered, which is the same state and keeps the graph free of masks (so
    XLA and cuDNN both apply). Keras' GRU uses `reset_after=True` (the cuDNN form), where TF1's
    `GRUCell` applied the reset gate before the matrix product; see BUILD_NOTES.md.

    The weights live in a `keras.layers.GRU` (so checkpoints are the same either way); on the CPU
    its recurrence runs through `unrolled_gru`, on a GPU through the layer itself (cuDNN).
    """

    def __init__(self, item_embedding, embedding_dim, maxlen, **kwargs):
        super().__init__(item_embedding, embedding_dim, maxlen, **kwargs)
        self.gru = keras.layers.GRU(embedding_dim, return_sequences=True, name="gru")
        self.gru.build((None, maxlen, embedding_dim))

    def encode(self, history_emb, mask, training=False):
        if keras_gru_is_faster() or history_emb.shape[1] is None:
            states = self.gru(history_emb, training=training)
        else:
            cell = self.gru.cell
            states = unrolled_gru(history_emb, cell.kernel, cell.recurrent_kernel, cell.bias)
        last = ops.cast(ops.sum(mask, axis=1), "int32") - 1  # right padding: length - 1
        return ops.take_along_axis(states, last[:, None, None], axis=1)[:, 0, :]
