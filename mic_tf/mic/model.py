"""`MICModel`: any registered encoder + the MIC plugin (paper 2.3-2.7, spec 3.3).

Per batch (original fields + the perturbed view fields from `perturbation.make_view_fn`):
  u  = user tower(original history)             -> the basic loss, and the anchor of L_uu / L_uv
  u~ = user tower(view history, embedding dropout)   (a positive of u in L_uu)
  v  = item tower(target)                        -> anchor of L_vv, positive of u in L_uv
  v~ = item tower(view id / category) + dropout  (a positive of v in L_vv)
Mined neighbours (refreshed every `mining_every` steps by `MiningCallback`, from its start step
on) add positives and hard negatives: users from a bank of user vectors computed at mining time,
items fresh from the table. No positive of an anchor is among its negatives (in-batch rows that
are one of its mined positives are masked; mining keeps hard negatives out of the positives).
Total (eq. 10): `lam * L_basic + (1 - lam) * r(step) * (w_uv L_uv + w_vv L_vv + w_uu L_uu)`,
where `r` ramps the contrastive weight from 0 to 1 over `ramp_steps` after `contrastive_start`
(r = 1 throughout by default, eq. 10 as printed).
Multi-interest encoders use the readout against the target as the user vector of L_uv; L_uu's
user vector is the readout too (`uu_anchor="readout"`, spec 3.3) or, by default, the renormalised
mean of the normalised interests (`"mean"`), the representation the user bank (and U2U
inference) holds, so that anchors, views and mined neighbours live in one space.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mic_tf.errors import ConfigError
from mic_tf.mic import contrastive
from mic_tf.mic.perturbation import hash_keep_mask
from mic_tf.models import replicas
from mic_tf.models.retrieval_model import RetrievalModel

# What each ablation turns off (paper Table 4). -u2u/-u2i/-i2i act at inference only.
ABLATIONS = {
    "full": {}, "-uu": {"w_uu": 0.0}, "-ui": {"w_uv": 0.0}, "-ii": {"w_vv": 0.0},
    "-perturbation": {"perturbation": False}, "-mining": {"mining": False},
    "-u2u": {}, "-u2i": {}, "-i2i": {},
}
UU_ANCHORS = ("mean", "readout")


@keras.saving.register_keras_serializable(package="mic")
class ProjectionHead(keras.layers.Layer):
    """Non-linear projection into the joint user-item space of L_uv: `[..., D] -> [..., D]`."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.hidden = keras.layers.Dense(dim, activation="relu", name="hidden")
        self.out = keras.layers.Dense(dim, name="out")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (self.dim,))
        self.built = True

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def project_whole_bank(bank_rows, listed_shape) -> bool:
    """Whether projecting all `bank_rows` rows is cheaper than projecting the `[B, k]` listed ones
    (static shapes only; an unknown batch size keeps the per-row path)."""
    batch, width = listed_shape
    return bank_rows is not None and batch is not None and bank_rows <= batch * width


def ablation_settings(ablation: str) -> dict:
    if ablation not in ABLATIONS:
        raise ConfigError(f"unknown ablation {ablation!r}; choose one of {list(ABLATIONS)}")
    settings = {"w_uu": 1.0, "w_vv": 1.0, "w_uv": 1.0, "perturbation": True, "mining": True}
    settings.update(ABLATIONS[ablation])
    return settings


@keras.saving.register_keras_serializable(package="mic")
class MICModel(RetrievalModel):
    """X + MIC. Arguments beyond `RetrievalModel`'s:

      num_train_users: size of the user bank and of the mined user lists.
      ablation: a key of `ABLATIONS`.
      mic_lambda: lam of eq. 10 (0.7). w_uv, w_vv, w_uu: channel weights (1 : 1 : 1).
      temperature: tau of the InfoNCE losses (0.1).
      dropout: embedding-level dropout rate of the perturbed views (0.2).
      num_positives / num_hard_negatives / num_cross: sizes of the mined lists.
      mined_weight: None (every positive pair alike) or the weight of the mined positives
        against the real one (`contrastive.info_nce`).
      contrastive_start / ramp_steps: the contrastive part is off before `contrastive_start`
        steps, then ramps linearly to full weight over `ramp_steps` steps (0: at once).
      uu_anchor: "mean" or "readout", the multi-interest user vector of L_uu (above).
      single_channel_heads: L_uu / L_vv contrast in their own projection heads' space (True)
        or directly in the encoder space (False).
    """

    def __init__(self, *args, num_train_users: int, ablation: str = "full",
                 mic_lambda: float = 0.7, w_uv: float = 1.0, w_vv: float = 1.0,
                 w_uu: float = 1.0, temperature: float = 0.1, dropout: float = 0.2,
                 num_positives: int = 5, num_hard_negatives: int = 5, num_cross: int = 5,
                 mined_weight: float | None = None, contrastive_start: int = 0,
                 ramp_steps: int = 0, uu_anchor: str = "mean",
                 single_channel_heads: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if uu_anchor not in UU_ANCHORS:
            raise ConfigError(f"uu_anchor must be one of {UU_ANCHORS}, got {uu_anchor!r}")
        self.mined_weight = None if mined_weight is None else float(mined_weight)
        self.contrastive_start, self.ramp_steps = int(contrastive_start), int(ramp_steps)
        self.uu_anchor, self.single_channel_heads = uu_anchor, bool(single_channel_heads)
        self.num_train_users = int(num_train_users)
        self.ablation = ablation
        switches = ablation_settings(ablation)
        self.mic_lambda, self.temperature, self.dropout = mic_lambda, temperature, dropout
        self.w_uv, self.w_vv, self.w_uu = (w * switches[k] for k, w in
                                           (("w_uv", w_uv), ("w_vv", w_vv), ("w_uu", w_uu)))
        self._weights_given = {"w_uv": w_uv, "w_vv": w_vv, "w_uu": w_uu}
        self.perturbation, self.mining = switches["perturbation"], switches["mining"]
        self.num_positives, self.num_hard_negatives = num_positives, num_hard_negatives
        self.num_cross = num_cross
        d = self.embedding_dim
        self.user_head = ProjectionHead(d, name="user_projection")
        self.item_head = ProjectionHead(d, name="item_projection")
        # SimCLR-style heads for the single-channel losses: the invariances L_uu / L_vv ask for
        # are learnt in the head's space instead of being forced on the retrieval space.
        self.user_user_head = ProjectionHead(d, name="user_user_projection")
        self.item_item_head = ProjectionHead(d, name="item_item_projection")
        for head in (self.user_head, self.item_head, self.user_user_head, self.item_item_head):
            head.build((None, d))
        u, n = self.num_train_users, self.num_items + 1
        self.user_bank = self._state((u, d), "float32", "user_bank")
        self.user_pos = self._state((u, num_positives), "int32", "mined_user_positives")
        self.user_hard = self._state((u, num_hard_negatives), "int32", "mined_user_hard_negatives")
        self.item_pos = self._state((n, num_positives), "int32", "mined_item_positives")
        self.item_hard = self._state((n, num_hard_negatives), "int32", "mined_item_hard_negatives")
        self.user_items = self._state((u, num_cross), "int32", "mined_user_items")
        self.item_users = self._state((n, num_cross), "int32", "mined_item_users")
        self.add_loss_trackers(["uv_loss", "vv_loss", "uu_loss"])

    def _state(self, shape, dtype, name):
        init = "zeros" if dtype == "float32" else keras.initializers.Constant(-1)
        return self.add_weight(shape=shape, dtype=dtype, initializer=init, trainable=False,
                               name=name)

    # ---- mining state ------------------------------------------------------------------------
    def assign_mined(self, mined, user_bank: np.ndarray) -> None:
        """Stores mining results (a `mining.MinedNeighbours`) and the user bank in the model."""
        self.user_bank.assign(user_bank.astype(np.float32))
        for var, value in ((self.user_pos, mined.user_pos), (self.user_hard, mined.user_hard),
                           (self.item_pos, mined.item_pos), (self.item_hard, mined.item_hard),
                           (self.user_items, mined.user_items),
                           (self.item_users, mined.item_users)):
            var.assign(value.astype(np.int32))

    def _identity_head(self, x):
        return x

    def _head_space(self, head, bank, id_lists, inputs):
        """Unit vectors in `head`'s space for `inputs` (each `[B, D]` or `[B, P, D]`) and for the
        rows of `bank` `[R, D]` listed in `id_lists` (each `[B, k]`, -1 = missing).

        Returns (the projected inputs, [(`[B, k, D]` rows, `[B, k]` mask) per list]), from one
        head call and one normalisation (few large products rather than many small ones). When
        the bank has no more rows than the lists hold (ml-100k: 754 users or 1,350 items against
        1,280-2,560 listed rows per step) the whole bank is projected once and the lists gather
        from it; otherwise (large catalogues) the listed rows are gathered first. Static shapes
        decide, so either way the step stays XLA-compilable.
        """
        d = self.embedding_dim
        flat = [tf.reshape(t, [-1, d]) for t in inputs]
        ids = tf.concat(id_lists, axis=1) if id_lists else None
        whole = ids is not None and project_whole_bank(bank.shape[0], ids.shape)
        if ids is not None:
            flat.append(bank if whole else tf.reshape(tf.gather(bank, tf.maximum(ids, 0)), [-1, d]))
        out = tf.math.l2_normalize(head(tf.concat(flat, axis=0)), axis=-1)
        parts = tf.split(out, [tf.shape(f)[0] for f in flat], axis=0)
        projected = [tf.reshape(p, tf.shape(t)) for p, t in zip(parts, inputs)]
        if ids is None:
            return projected, []
        rows = (tf.gather(parts[-1], tf.maximum(ids, 0)) if whole
                else tf.reshape(parts[-1], [-1, ids.shape[1], d]))
        sizes = [i.shape[1] for i in id_lists]
        masks = tf.split(ids >= 0, sizes, axis=1)
        return projected, list(zip(tf.split(rows, sizes, axis=1), masks))

    # ---- views -------------------------------------------------------------------------------
    def draw_noise(self, features) -> dict:
        """The basic loss's negatives, plus the seeds of the embedding dropout of the user / item
        views (stateless streams 20, 21 of the step seed), whose masks `_dropout` computes with
        `perturbation.hash_keep_mask`."""
        noise = super().draw_noise(features)
        if not self.perturbation or self.dropout <= 0:
            return noise
        if self.w_uu:
            noise["user_view"] = self.step_seed(20)
        if self.w_vv:
            noise["item_view"] = self.step_seed(21)
        return noise

    def _dropout(self, seed):
        """Inverted dropout at `self.dropout` with the masks of `seed` (None: identity)."""
        if seed is None:  # rate 0
            return lambda x: x
        scale = 1.0 / (1.0 - self.dropout)
        # flat_offset: split over replicas, each replica's rows get the global batch's masks
        return lambda x: tf.where(hash_keep_mask(x, seed, self.dropout, replicas.flat_offset(x)),
                                  x * scale, tf.zeros_like(x))

    def _user_view(self, features, target_emb, seed):
        view = {"history": features["history_view"],
                "user_features": features["user_features_view"]}
        u_view = self.user_tower(view, training=True, embedding_dropout=self._dropout(seed))
        return self._uu_vector(u_view, self.user_readout(u_view, target_emb))

    def _item_view(self, features, seed):
        category = features["target_category_view"] if self.use_category else None
        return self._dropout(seed)(self.item_tower(features["target_view"], category))

    # ---- losses ------------------------------------------------------------------------------
    def contrastive_factor(self):
        """r(step) of eq. 10's contrastive part: 0 before `contrastive_start`, then a linear ramp
        to 1 over `ramp_steps` (a scalar tensor; 1.0 when neither is set)."""
        if not self.contrastive_start and not self.ramp_steps:
            return tf.constant(1.0)
        step = tf.cast(self.optimizer.iterations, tf.float32) - float(self.contrastive_start)
        if not self.ramp_steps:
            return tf.cast(step >= 0.0, tf.float32)
        return tf.clip_by_value(step / float(self.ramp_steps), 0.0, 1.0)

    def compute_losses(self, features, training=True, noise=None) -> dict:
        noise = self.draw_noise(features) if noise is None else noise
        table = self.item_table(training=training)
        targets, users_idx = features["target"], features["user"]
        target_emb = tf.gather(table, targets)
        interests = self(features, training=training)
        u = self.user_readout(interests, target_emb)
        basic = self.compute_basic_loss(u, targets, table, noise)
        zero = tf.zeros([], basic.dtype)
        uu = vv = uv = zero
        if self.w_uu:
            uu = self._user_user(features, self._uu_vector(interests, u), users_idx, target_emb,
                                 noise.get("user_view"))
        if self.w_vv:
            vv = self._item_item(features, targets, table, noise.get("item_view"))
        if self.w_uv:
            uv = self._user_item(u, target_emb, targets, users_idx, table)
        contrast = self.w_uv * uv + self.w_vv * vv + self.w_uu * uu
        total = (self.mic_lambda * basic
                 + (1.0 - self.mic_lambda) * self.contrastive_factor() * contrast)
        return {"loss": total, "basic_loss": basic, "uv_loss": uv, "vv_loss": vv, "uu_loss": uu}

    def _uu_vector(self, interests, readout):
        """L_uu's user vector: the readout, or (multi-interest, `uu_anchor="mean"`) the
        renormalised mean of the normalised interests, as the user bank stores them."""
        if not self.user_tower.multi_interest or self.uu_anchor == "readout":
            return readout
        return tf.math.l2_normalize(
            tf.reduce_mean(tf.math.l2_normalize(interests, axis=-1), axis=1), axis=-1)

    def _positives(self, view, mined, mined_mask):
        """The real positive (the view, first) and the mined ones, with their validity mask."""
        parts, masks = [], []
        if view is not None:
            parts.append(view[:, None, :])
            masks.append(tf.ones([tf.shape(view)[0], 1], tf.bool))
        if mined is not None:
            parts.append(mined)
            masks.append(mined_mask)
        return tf.concat(parts, axis=1), tf.concat(masks, axis=1)

    def _user_user(self, features, u, users_idx, target_emb, seed):
        view = self._user_view(features, target_emb, seed) if self.perturbation else None
        head = self.user_user_head if self.single_channel_heads else self._identity_head
        return self._single_channel(u, users_idx, view, self.user_bank, self.user_pos,
                                    self.user_hard, head, contrastive.user_user_loss)

    def _item_item(self, features, targets, table, seed):
        view = self._item_view(features, seed) if self.perturbation else None
        head = self.item_item_head if self.single_channel_heads else self._identity_head
        return self._single_channel(None, targets, view, table, self.item_pos, self.item_hard,
                                    head, contrastive.item_item_loss)

    def _single_channel(self, anchor, ids, view, bank, pos_lists, hard_lists, head, loss):
        """L_uu or L_vv: anchors (`[B, D]`, or None when they are the rows `ids` `[B]` of `bank`,
        as items are) against their view and their mined positives / hard negatives (rows of
        `bank` listed per id), all in `head`'s space."""
        inputs = [x for x in (anchor, view) if x is not None]
        id_lists = [ids[:, None]] if anchor is None else []
        pos_ids = None
        if self.mining:
            pos_ids = tf.gather(pos_lists, ids)
            id_lists += [pos_ids, tf.gather(hard_lists, ids)]
        projected, lists = self._head_space(head, bank, id_lists, inputs)
        if anchor is None:
            (rows, _), *lists = lists
            anchor = rows[:, 0]
        else:
            anchor, *projected = projected
        mined = mined_mask = hard = hard_mask = None
        if self.mining:
            (mined, mined_mask), (hard, hard_mask) = lists
        positives, mask = self._positives(projected[0] if projected else None, mined, mined_mask)
        return loss(anchor, ids, positives, mask, self.temperature, hard, hard_mask,
                    unit_inputs=True, positive_ids=pos_ids, mined_weight=self.mined_weight,
                    num_real=1 if view is not None else 0)

    def _user_item(self, u, v, targets, users_idx, table):
        if not self.mining:
            return contrastive.user_item_loss(self.user_head(u), self.item_head(v), targets,
                                              self.temperature)
        mined_user_ids = tf.gather(self.item_users, targets)
        mined_item_ids = tf.gather(self.user_items, users_idx)
        [gu], [(users, mu_mask)] = self._head_space(
            self.user_head, self.user_bank, [mined_user_ids], [u])
        _, [(gv, _), (items, mi_mask)] = self._head_space(
            self.item_head, table, [targets[:, None], mined_item_ids], [])
        return contrastive.user_item_loss(
            gu, gv[:, 0], targets, self.temperature, items, mi_mask, users, mu_mask,
            unit_inputs=True, user_ids=users_idx, mined_item_ids=mined_item_ids,
            mined_user_ids=mined_user_ids, mined_weight=self.mined_weight)

    def get_config(self):
        return {**super().get_config(), "num_train_users": self.num_train_users,
                "ablation": self.ablation, "mic_lambda": self.mic_lambda,
                **self._weights_given, "temperature": self.temperature, "dropout": self.dropout,
                "num_positives": self.num_positives,
                "num_hard_negatives": self.num_hard_negatives, "num_cross": self.num_cross,
                "mined_weight": self.mined_weight, "contrastive_start": self.contrastive_start,
                "ramp_steps": self.ramp_steps, "uu_anchor": self.uu_anchor,
                "single_channel_heads": self.single_channel_heads}
