"""The two tower interfaces every encoder plugs into (spec 3.1).

`ItemTower` owns the item table. `UserTower` subclasses (the encoders) receive that table at
construction, so history items and softmax weights share one table, as in ComiRec.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

# ComiRec used TF1 `get_variable`'s default, Glorot-uniform; the paper says "Xavier".
ITEM_INITIALIZER = "glorot_uniform"


def lookup(embedding: keras.layers.Embedding, ids):
    """Rows of an embedding table, `[...] -> [..., D]`, read row by row.

    `Embedding.__call__` (like every `keras.ops` function) first converts the whole table to a
    tensor. Gathering from the underlying `tf.Variable` reads only the requested rows, and its
    gradient stays sparse; on a large catalogue that is the difference between O(batch) and O(N)
    work per step (a dense read also forces a copy of the table before the optimizer's scatter).
    """
    return tf.gather(embedding.embeddings.value, ids)


@keras.saving.register_keras_serializable(package="mic")
class ItemTower(keras.layers.Layer):
    """Item id embedding, plus (optionally) a category embedding added to it.

    Args:
      num_items: N; the table has N + 1 rows (row 0 = padding).
      embedding_dim: D.
      num_categories: C; category ids are 0..C (0 = none).
      use_category: add the category embedding to the id embedding.

    Call:
      item_ids `[...]` int and optional category_ids `[...]` int -> `[..., D]`.
    """

    def __init__(self, num_items: int, embedding_dim: int, num_categories: int = 0,
                 use_category: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        self.num_categories = num_categories
        self.use_category = use_category
        self.item_embedding = keras.layers.Embedding(
            num_items + 1, embedding_dim, embeddings_initializer=ITEM_INITIALIZER, name="items")
        self.category_embedding = None
        if use_category:
            self.category_embedding = keras.layers.Embedding(
                num_categories + 1, embedding_dim, embeddings_initializer=ITEM_INITIALIZER,
                name="categories")

    def build(self, input_shape=None):
        self.item_embedding.build((None,))
        if self.category_embedding is not None:
            self.category_embedding.build((None,))
        self.built = True

    def call(self, item_ids, category_ids=None):
        vectors = lookup(self.item_embedding, item_ids)
        if self.category_embedding is not None and category_ids is not None:
            vectors = vectors + lookup(self.category_embedding, category_ids)
        return vectors

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items,
                "embedding_dim": self.embedding_dim, "num_categories": self.num_categories,
                "use_category": self.use_category}


class UserTower(keras.layers.Layer):
    """Base class of the encoders: histories `[B, L]` -> user vectors `[B, D]` or `[B, K, D]`.

    Subclasses implement `encode(history_emb, mask, training)`; this base class embeds the
    history with the shared item table (zeroing padded positions, as ComiRec multiplies by the
    mask) and, when `num_user_fields > 0`, adds a projection of the user field embeddings.

    Args:
      item_embedding: the item table (an `Embedding` owned by the `ItemTower`).
      embedding_dim: D.
      maxlen: L.
      user_field_vocab_sizes: vocabulary size of each user field (field ids 0..V); empty = unused.

    Call:
      features: dict with `history` `[B, L]` int (0 = padding) and, when user fields are used,
        `user_features` `[B, F]` int.
      Returns `[B, D]` (single-interest) or `[B, K, D]` (multi-interest).
    """

    num_interests = 1  # K; multi-interest encoders override it

    def __init__(self, item_embedding, embedding_dim: int, maxlen: int,
                 user_field_vocab_sizes=(), **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.embedding_dim = embedding_dim
        self.maxlen = maxlen
        self.user_field_vocab_sizes = tuple(int(v) for v in user_field_vocab_sizes)
        self.field_embeddings = [
            keras.layers.Embedding(v + 1, embedding_dim, name=f"user_field_{j}")
            for j, v in enumerate(self.user_field_vocab_sizes)]
        self.field_projection = (keras.layers.Dense(embedding_dim, name="user_field_projection")
                                 if self.field_embeddings else None)

    @property
    def multi_interest(self) -> bool:
        return self.num_interests > 1

    def embed_history(self, history):
        """`[B, L]` ids -> (`[B, L, D]` embeddings with padded rows zeroed, `[B, L]` float mask)."""
        mask = ops.cast(ops.not_equal(history, 0), self.compute_dtype)
        return lookup(self.item_embedding, history) * mask[..., None], mask

    def add_user_fields(self, vectors, features):
        """Adds the projected user-field embeddings to `[B, D]` or every interest of `[B, K, D]`."""
        if self.field_projection is None:
            return vectors
        fields = features["user_features"]
        parts = [emb(fields[:, j]) for j, emb in enumerate(self.field_embeddings)]
        extra = self.field_projection(ops.concatenate(parts, axis=-1))
        return vectors + (extra[:, None, :] if self.multi_interest else extra)

    def call(self, features, training=False, embedding_dropout=None):
        """`embedding_dropout`: optional function applied to the embedded history (MIC's
        embedding-level perturbation); padded rows stay zero."""
        history_emb, mask = self.embed_history(features["history"])
        if embedding_dropout is not None:
            history_emb = embedding_dropout(history_emb)
        return self.add_user_fields(self.encode(history_emb, mask, training), features)

    def encode(self, history_emb, mask, training=False):
        raise TypeError(f"{type(self).__name__} must override encode(); UserTower is abstract")

    def get_config(self):
        # The item table is shared with the ItemTower; RetrievalModel.from_config re-links it.
        config = super().get_config()
        config.update({"embedding_dim": self.embedding_dim, "maxlen": self.maxlen,
                       "user_field_vocab_sizes": list(self.user_field_vocab_sizes)})
        return config
