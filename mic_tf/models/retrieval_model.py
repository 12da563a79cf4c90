"""`RetrievalModel`: a user tower and an item tower trained with a basic retrieval loss.

The custom `train_step` follows the Keras 3 idiom (override `train_step`, keep our own loss
helper under a name other than Keras' reserved `compute_loss`). Plugins such as MIC subclass it
and add their loss terms in `compute_losses`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mic_tf.errors import ConfigError
from mic_tf.models import losses, replicas
from mic_tf.models.encoders import get_encoder
from mic_tf.models.towers import ItemTower


@keras.saving.register_keras_serializable(package="mic")
class RetrievalModel(keras.Model):
    """Two towers with a tied item table.

    Args:
      encoder: a name from `mic_tf.models.encoders.ENCODERS`.
      num_items, num_categories: catalogue sizes (ids 1..N and 1..C; 0 = padding / none).
      embedding_dim: D. maxlen: L.
      user_field_vocab_sizes: vocabulary sizes of the user fields the user tower uses (may be ()).
      use_category: the item tower adds a category embedding (then every item vector needs the
        item's category, held in the non-trainable `item_category` weight).
      encoder_options: extra encoder arguments (`num_interests`, `routing_iterations`).
      basic_loss: `sampled_softmax` (ComiRec, default), `logistic` (eq. 9) or `full_softmax`.
      num_sampled: negatives per batch for the sampled softmax (ComiRec: 10 x batch size).
      logistic_negatives / logistic_temperature: negatives per example and tau_b of eq. 9.
      seed: seeds the stateless negative sampling (with the optimizer step).

    Call:
      features dict (see `mic_tf.data.pipeline`) -> user vectors `[B, D]` or `[B, K, D]`.
    """

    def __init__(self, encoder: str, num_items: int, embedding_dim: int, maxlen: int,
                 num_categories: int = 0, user_field_vocab_sizes=(), use_category: bool = False,
                 encoder_options: dict | None = None, basic_loss: str = "sampled_softmax",
                 num_sampled: int = 2560, logistic_negatives: int = 10,
                 logistic_temperature: float = 0.1, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if basic_loss not in losses.BASIC_LOSSES:
            raise ConfigError(f"unknown basic_loss {basic_loss!r}; choose one of "
                              f"{losses.BASIC_LOSSES}")
        self.encoder_name = encoder
        self.num_items = int(num_items)
        self.num_categories = int(num_categories)
        self.embedding_dim = int(embedding_dim)
        self.maxlen = int(maxlen)
        self.user_field_vocab_sizes = tuple(int(v) for v in user_field_vocab_sizes)
        self.use_category = bool(use_category)
        self.encoder_options = dict(encoder_options or {})
        self.basic_loss = basic_loss
        self.num_sampled = int(num_sampled)
        self.logistic_negatives = int(logistic_negatives)
        self.logistic_temperature = float(logistic_temperature)
        self.seed = int(seed)
        self.item_tower = ItemTower(num_items, embedding_dim, num_categories, use_category,
                                    name="item_tower")
        self.item_tower.build()  # the table must exist before the first train step reads it
        self.user_tower = get_encoder(encoder)(
            self.item_tower.item_embedding, embedding_dim, maxlen,
            user_field_vocab_sizes=self.user_field_vocab_sizes, name="user_tower",
            **self.encoder_options)
        self.item_category = self.add_weight(shape=(num_items + 1,), dtype="int32",
                                             initializer="zeros", trainable=False,
                                             name="item_category")
        self.trackers = {}
        self.add_loss_trackers(["loss", "basic_loss"])

    # ---- inference -------------------------------------------------------------------------
    @property
    def num_interests(self) -> int:
        return self.user_tower.num_interests

    def call(self, features, training=False):
        return self.user_tower(features, training=training)

    def item_table(self, training=False):
        """Item vectors `[N + 1, D]` (row 0 = padding)."""
        if not self.use_category:
            # The tf.Variable itself, so that gathers from it read rows, not the whole table.
            return self.item_tower.item_embedding.embeddings.value
        ids = tf.range(self.num_items + 1)
        return self.item_tower(ids, tf.convert_to_tensor(self.item_category))

    def set_item_category(self, item_category: np.ndarray) -> None:
        if len(item_category) != self.num_items + 1:
            raise ConfigError(f"item_category has {len(item_category)} rows; the model has "
                              f"{self.num_items + 1} items (with padding)")
        self.item_category.assign(np.asarray(item_category, dtype=np.int32))

    def build_from_batch(self, batch) -> None:
        """Creates every variable by running one forward pass (before restoring a checkpoint)."""
        self(batch, training=False)
        self.item_table()

    def get_build_config(self):
        return {"maxlen": self.maxlen, "num_user_fields": len(self.user_field_vocab_sizes)}

    def build_from_config(self, config):
        # Keras would trace call() with float placeholders; item ids must be integers.
        self.build_from_batch({
            "history": np.ones((1, config["maxlen"]), np.int32),
            "user_features": np.ones((1, config["num_user_fields"]), np.int32)})

    # ---- training --------------------------------------------------------------------------
    def step_seed(self, stream: int):
        """A stateless seed `[2]` from the run seed and the optimizer step (resume-safe)."""
        base = tf.stack([tf.constant(self.seed, tf.int64),
                         tf.cast(self.optimizer.iterations, tf.int64)])
        return tf.random.experimental.stateless_fold_in(base, stream)

    def user_readout(self, user, target_emb):
        """Single vector `[B, D]` per user for the loss: the hard readout for multi-interest."""
        return losses.hard_readout(user, target_emb) if self.user_tower.multi_interest else user

    def compute_basic_loss(self, user, targets, table, noise):
        if self.basic_loss == "full_softmax":
            return losses.full_softmax_loss(user, targets, table)
        if self.basic_loss == "logistic":
            return losses.logistic_loss(user, targets, table, noise["negatives"],
                                        self.logistic_temperature)
        return losses.sampled_softmax_loss(user, targets, table, noise["negatives"],
                                           noise["expected_counts"])

    def compute_losses(self, features, training=True, noise=None) -> dict:
        """Every loss term of one batch, plus their weighted total under the key `loss`.
        `noise`: `draw_noise(features)` (drawn here when None)."""
        noise = self.draw_noise(features) if noise is None else noise
        table = self.item_table(training=training)
        user = self(features, training=training)
        target_emb = tf.gather(table, features["target"])
        basic = self.compute_basic_loss(self.user_readout(user, target_emb), features["target"],
                                        table, noise)
        return {"loss": basic, "basic_loss": basic}

    def compile(self, *args, jit_compile=False, **kwargs):
        """Keras' `compile`; `jit_compile=True` XLA-compiles the update (forward, backward, optimizer)
        but not the step's random draws (`draw_noise`): XLA's CPU random generator made the MIC
        step 2.6x slower, while the rest of the step gains from XLA. `"auto"` is Keras' choice
        for the whole step."""
        self._xla_update = jit_compile != "auto" and bool(jit_compile)
        self._update_fn = (tf.function(self._update, jit_compile=True) if self._xla_update
                           else self._update)
        super().compile(*args, jit_compile="auto" if jit_compile == "auto" else False, **kwargs)
        self._compile_config.config["jit_compile"] = jit_compile  # saved with the model

    def compile_from_config(self, config):
        """Keras skips a custom `compile` when loading a model; ours only routes XLA, so call it."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def draw_noise(self, features) -> dict:
        """Every random tensor the update needs (here the basic loss's negatives), drawn outside
        the XLA-compiled part: XLA's stateless generators give other numbers than TF's kernels
        for the same seed, and this way the update is a function of (weights, batch, noise) that
        trains the same with or without XLA."""
        if self.basic_loss == "full_softmax":
            return {}
        if self.basic_loss == "logistic":
            # Drawn for the global batch (fixed size), then this replica's rows (`replicas`).
            rows = features["target"].shape[0]
            count = rows * replicas.num_replicas() * self.logistic_negatives
            neg, _ = losses.log_uniform_sample(self.step_seed(10), count, self.num_items)
            neg = tf.reshape(neg, [-1, self.logistic_negatives])
            return {"negatives": replicas.local_rows(neg, rows)}
        sampled, expected = losses.log_uniform_sample(self.step_seed(10), self.num_sampled,
                                                      self.num_items)
        return {"negatives": sampled, "expected_counts": expected}

    def train_step(self, data):
        update = getattr(self, "_update_fn", self._update)
        return update(data, self.draw_noise(data))

    def _update(self, data, noise):
        return self._track(self.train_update(data, noise))

    def train_update(self, data, noise) -> dict:
        """The one training step: every loss term, their gradients, the optimizer update.

        `fit` runs it through `train_step` (optionally XLA-compiled); the multi-worker loop
        (`mic_tf.distributed.loop`) runs it in each replica with `strategy.run`, where the losses'
        batch means and in-batch candidates span every replica (`replicas`) and Keras' optimizer
        sums the gradients over replicas. Returns the loss terms (this replica's share of each).
        """
        with tf.GradientTape() as tape:
            values = self.compute_losses(data, training=True, noise=noise)
        grads = tape.gradient(values["loss"], self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return values

    def shared_variables(self) -> list:
        """The weights every loss term reaches: the item tower's table(s) and the user tower."""
        return [*self.item_tower.trainable_variables, *self.user_tower.trainable_variables]

    def term_gradient_norms(self, features) -> dict:
        """`{term: global L2 norm of its gradient on the shared weights}` for every loss term of
        `compute_losses` (unweighted terms; `loss` is the weighted total), on one batch. Sparse
        table gradients are summed per row first (`tf.convert_to_tensor`), so a repeated row
        counts once, as the optimizer sees it. For TensorBoard (the balance between terms)."""
        if not hasattr(self, "_grad_norm_fn"):
            self._grad_norm_fn = tf.function(self._term_gradient_norms)
        return {k: float(v) for k, v in self._grad_norm_fn(features).items()}

    def _term_gradient_norms(self, features):
        shared = self.shared_variables()
        noise = self.draw_noise(features)
        with tf.GradientTape(persistent=True) as tape:
            values = self.compute_losses(features, training=True, noise=noise)
        out = {}
        for name, value in values.items():
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(value, shared)
                     if g is not None]
            out[name] = tf.linalg.global_norm(grads) if grads else tf.zeros([])
        del tape
        return out

    def add_loss_trackers(self, names) -> None:
        """Running means shown in the progress bar and logged to TensorBoard (one per term)."""
        for name in names:
            self.trackers[name] = keras.metrics.Mean(name=name)

    def _track(self, values: dict) -> dict:
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    @property
    def metrics(self):
        return list(self.trackers.values())

    # ---- serialisation ---------------------------------------------------------------------
    def get_config(self):
        return {**super().get_config(), "encoder": self.encoder_name, "num_items": self.num_items,
                "embedding_dim": self.embedding_dim, "maxlen": self.maxlen,
                "num_categories": self.num_categories,
                "user_field_vocab_sizes": list(self.user_field_vocab_sizes),
                "use_category": self.use_category, "encoder_options": self.encoder_options,
                "basic_loss": self.basic_loss, "num_sampled": self.num_sampled,
                "logistic_negatives": self.logistic_negatives,
                "logistic_temperature": self.logistic_temperature, "seed": self.seed}

    def export_user_tower(self, path: str) -> None:
        """Writes a SavedModel whose `serve` endpoint maps histories `[B, L]` to user vectors."""
        archive = keras.export.ExportArchive()
        archive.track(self)
        signature = [tf.TensorSpec([None, self.maxlen], tf.int32, name="history")]
        if self.user_field_vocab_sizes:
            signature.append(tf.TensorSpec([None, len(self.user_field_vocab_sizes)], tf.int32,
                                           name="user_features"))

            def serve(history, user_features):
                return self({"history": history, "user_features": user_features}, training=False)
        else:
            def serve(history):
                return self({"history": history}, training=False)
        archive.add_endpoint(name="serve", fn=serve, input_signature=signature)
        archive.write_out(path, verbose=False)
