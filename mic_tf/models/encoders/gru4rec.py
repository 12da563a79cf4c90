"""GRU4Rec as in ComiRec's `Model_GRU4REC`: a GRU over the history; the user is the last state."""

import keras
from keras import ops

from mic_tf.models.towers import UserTower


@keras.saving.register_keras_serializable(package="mic")
class GRU4Rec(UserTower):
    """`[B, L, D]` right-padded history -> `[B, D]`, the GRU state after the last real item.

    ComiRec runs `dynamic_rnn` with `sequence_length`; here the GRU returns every state and the one
    at `length - 1` is gathered, which is the same state and keeps the graph free of masks (so
    XLA and cuDNN both apply). Keras' GRU uses `reset_after=True` (the cuDNN form), where TF1's
    `GRUCell` applied the reset gate before the matrix product; see BUILD_NOTES.md.
    """

    def __init__(self, item_embedding, embedding_dim, maxlen, **kwargs):
        super().__init__(item_embedding, embedding_dim, maxlen, **kwargs)
        self.gru = keras.layers.GRU(embedding_dim, return_sequences=True, name="gru")

    def encode(self, history_emb, mask, training=False):
        states = self.gru(history_emb, training=training)  # [B, L, D]
        last = ops.cast(ops.sum(mask, axis=1), "int32") - 1  # right padding: length - 1
        return ops.take_along_axis(states, last[:, None, None], axis=1)[:, 0, :]
