"""Issue 14's fixes of the MIC plugin, each against a hand-computed case: separate weights of the
real and the mined positives, no positive among an anchor's negatives (in-batch and hard), the
mining warm-up / plateau start, the contrastive ramp, a consistent multi-interest L_uu anchor and
the per-term gradient norms."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from mic_tf.data.pipeline import make_train_dataset
from mic_tf.experiment import ExperimentConfig, build_model, plugin_parts
from mic_tf.mic import contrastive, mining
from mic_tf.mic.plugin import single_vectors
from mic_tf.training.checkpoints import RunState
from mic_tf.training.trainer import TrainConfig, make_optimizer
from tests.toy_data import toy_dataset


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pair_losses(a, pos, cands, cand_mask, tau):
    """l[i, p] = -log(e^s_p / (e^s_p + sum_neg e^s_n)) by hand."""
    out = np.zeros(pos.shape[:2])
    for i in range(len(a)):
        negs = [unit(a[i]) @ unit(cands[j]) / tau for j in range(len(cands)) if cand_mask[i, j]]
        for p in range(pos.shape[1]):
            s = unit(a[i]) @ unit(pos[i, p]) / tau
            out[i, p] = -s + np.log(np.exp(s) + np.sum(np.exp(negs)))
    return out


def test_real_and_mined_positives_weighted_separately():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 5)).astype(np.float32)
    pos = rng.normal(size=(4, 3, 5)).astype(np.float32)  # [real, mined, mined]
    mask = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 1, 1]], bool)
    cand_mask = ~np.eye(4, dtype=bool)
    l = _pair_losses(a, pos, a, cand_mask, 0.2)
    w = 0.5
    per_anchor = [(l[0, 0] + w * l[0, 1:].mean()) / (1 + w),  # both mined valid
                  l[1, 0],  # no valid mined positive: the real one alone
                  (l[2, 0] + w * l[2, 1]) / (1 + w),
                  w * l[3, 1:].mean() / w]  # no real positive: the mined mean alone
    got = contrastive.info_nce(a, pos, mask, None, cand_mask, 0.2, mined_weight=w)
    np.testing.assert_allclose(got.numpy(), np.mean(per_anchor), rtol=1e-5)
    # None: every valid pair alike (5/6 of the weight on 5 mined positives)
    got = contrastive.info_nce(a, pos, mask, None, cand_mask, 0.2)
    np.testing.assert_allclose(got.numpy(), l[mask].mean(), rtol=1e-5)
    # no real positive at all (-perturbation): the mean of the mined ones per anchor
    got = contrastive.info_nce(a, pos[:, 1:], mask[:, 1:], None, cand_mask, 0.2,
                               mined_weight=w, num_real=0)
    expected = np.mean([l[0, 1:].mean(), l[2, 1], l[3, 1:].mean()])  # anchor 1 has none
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_in_batch_mask_excludes_the_anchors_mined_positives():
    ids = tf.constant([3, 5, 7, 5])
    exclude = tf.constant([[5, -1], [-1, -1], [3, 9], [7, 3]])
    got = contrastive.in_batch_mask(ids, exclude).numpy()
    expected = np.array([[0, 0, 1, 0],   # 3: not itself, not 5 (mined) -> only 7
                         [1, 0, 1, 0],   # 5: not itself (rows 1 and 3 share id 5)
                         [0, 1, 0, 1],   # 7: not 3 (mined)
                         [0, 0, 0, 0]],  # 5: not itself (1, 3), not 7, 3 (mined)
                        bool)
    np.testing.assert_array_equal(got, expected)


def test_user_item_loss_drops_mined_positives_from_the_negatives():
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    items, users = np.array([10, 11, 12]), np.array([0, 1, 2])
    mined_items = np.array([[11], [-1], [-1]])  # item 11 mined for user 0
    mined_users = np.array([[-1], [-1], [0]])  # user 0 mined for item 12
    tau = 0.5
    # u -> i: user 0's negatives are the batch items except its target (10) and 11 -> {12}
    neg_u = np.array([[0, 0, 1], [1, 0, 1], [1, 1, 0]], bool)
    # i -> u: item 12's negatives are batch users except its own (2) and user 0 -> {1}
    neg_i = np.array([[0, 1, 1], [1, 0, 1], [0, 1, 0]], bool)
    l_u = _pair_losses(u, v[:, None], v, neg_u, tau)[:, 0].mean()
    l_i = _pair_losses(v, u[:, None], u, neg_i, tau)[:, 0].mean()
    got = contrastive.user_item_loss(
        u, v, tf.constant(items), tau, np.zeros((3, 1, 4), np.float32), np.zeros((3, 1), bool),
        np.zeros((3, 1, 4), np.float32), np.zeros((3, 1), bool), user_ids=tf.constant(users),
        mined_item_ids=tf.constant(mined_items), mined_user_ids=tf.constant(mined_users))
    np.testing.assert_allclose(got.numpy(), l_u + l_i, rtol=1e-5)


def test_nearest_hard_negatives_skip_positives():
    # anchor 0 (cluster 0): 1 (same cluster), 2 (other cluster but a positive), 3, 4 (other)
    labels = np.array([0, 0, 1, 1, 1])
    neighbours = np.array([[1, 2, 3, 4], [0, 2, 3, 4], [3, 4, 0, 1], [2, 4, 0, 1], [2, 3, 0, 1]])
    positives = np.array([[1, 2], [0, -1], [3, -1], [2, -1], [2, -1]])
    hard = mining.hard_negatives(neighbours, labels, 2, positives)
    assert hard.tolist() == [[3, 4], [2, 3], [0, 1], [0, 1], [0, 1]]
    assert mining.hard_negatives(neighbours, labels, 2)[0].tolist() == [2, 3]  # without the rule


def test_random_hard_negatives_other_cluster_never_self_or_positive_no_repeats():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 400)
    positives = rng.integers(0, 400, (400, 5))
    hard = mining.random_hard_negatives(labels, 6, positives, seed=7)
    assert hard.shape == (400, 6) and (hard >= 0).mean() > 0.99
    for i in range(400):
        row = hard[i][hard[i] >= 0]
        assert len(set(row)) == len(row) and i not in row
        assert (labels[row] != labels[i]).all() and not set(row) & set(positives[i])
    np.testing.assert_array_equal(hard, mining.random_hard_negatives(labels, 6, positives, 7))
    one = mining.random_hard_negatives(np.zeros(10, int), 3, np.full((10, 1), -1), 0)
    assert (one == -1).all()  # a single cluster has no other-cluster sample


def test_mine_random_hard_negatives_are_not_positives():
    rng = np.random.default_rng(2)
    users, items = rng.normal(size=(60, 6)), rng.normal(size=(41, 6))
    cfg = mining.MiningConfig(num_positives=3, num_hard_negatives=4, num_cross=2, num_clusters=3,
                              search_k=20, hard_negatives="random")
    out = mining.mine(users, items, users, items, cfg)
    for pos, hard in ((out.user_pos, out.user_hard), (out.item_pos[1:], out.item_hard[1:])):
        for p, h in zip(pos, hard):
            assert not set(p[p >= 0]) & set(h[h >= 0])
    with pytest.raises(ValueError, match="hard_negatives must be one of"):
        mining.mine(users, items, users, items,
                    mining.MiningConfig(num_clusters=3, hard_negatives="far"))


def _mic(encoder="youtube_dnn", **mic):
    ds = toy_dataset(num_users=80, num_items=40)
    cfg = ExperimentConfig(encoder=encoder, plugin="mic", embedding_dim=8,
                           train=TrainConfig(batch_size=16, maxlen=5))
    for k, v in mic.items():
        setattr(cfg.mic, k, v)
    cfg.mic.mining.num_clusters = 3
    keras.utils.set_random_seed(0)
    model = build_model(cfg, ds)
    map_fn, callbacks = plugin_parts(cfg, ds, lambda msg: None)
    model.compile(optimizer=make_optimizer("adam", 1e-2))
    data = make_train_dataset(ds, batch_size=16, maxlen=5, seed=0, map_fn=map_fn)
    batch = next(iter(data))
    model.build_from_batch(batch)
    model.optimizer.build(model.trainable_variables)
    return model, data, callbacks, batch


def test_contrastive_ramp():
    model, _, _, _ = _mic(contrastive_start=10, ramp_steps=20)
    got = []
    for step in (0, 9, 10, 20, 30, 45):
        model.optimizer.iterations.assign(step)
        got.append(float(model.contrastive_factor()))
    assert got == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    model, _, _, batch = _mic(contrastive_start=5)  # a step at 5, no ramp
    model.optimizer.iterations.assign(4)
    values = model.compute_losses(batch)
    np.testing.assert_allclose(values["loss"], 0.7 * values["basic_loss"], rtol=1e-6)
    model.optimizer.iterations.assign(5)
    assert float(model.contrastive_factor()) == 1.0


def _mined_steps(model, data, callbacks, steps):
    mined = []
    miner = callbacks[0]
    original = miner.mine
    miner.mine = lambda step: mined.append(step) or original(step)
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=callbacks)
    return mined


def test_mining_waits_for_the_warm_up_then_every_k_steps():
    model, data, callbacks, _ = _mic(mining_every=4, mining_start=6)
    assert _mined_steps(model, data, callbacks, 13) == [6, 8, 12]
    # before the first mining the lists are empty: the losses use the views alone
    model, data, callbacks, _ = _mic(mining_every=4, mining_start=100)
    _mined_steps(model, data, callbacks, 5)
    assert (keras.ops.convert_to_numpy(model.user_pos) == -1).all()


def test_mining_on_plateau_starts_at_the_first_validation_without_gain():
    model, data, callbacks, _ = _mic(mining_every=4, mining_on_plateau=True)
    state = RunState()
    callbacks[0].attach_state(state)
    assert _mined_steps(model, data, callbacks, 3) == []  # no plateau yet
    state.plateau_step = 3
    assert _mined_steps(model, data, callbacks, 6) == [4, 8]  # at once, then multiples of 4
    assert state.mining_started_at == 4  # persisted with the run state: resumes alike


def test_multi_interest_uu_anchor_is_the_bank_vector():
    model, _, _, batch = _mic("comirec_sa")
    interests = model(batch, training=False).numpy()
    anchor = model._uu_vector(tf.constant(interests), None).numpy()
    np.testing.assert_allclose(anchor, single_vectors(interests), rtol=1e-5, atol=1e-6)
    mean = unit(interests).mean(axis=1)
    np.testing.assert_allclose(anchor, unit(mean), rtol=1e-5, atol=1e-6)  # by hand
    model, _, _, batch = _mic("comirec_sa", uu_anchor="readout")
    readout = tf.constant(interests[:, 0])
    assert model._uu_vector(tf.constant(interests), readout) is readout


def test_term_gradient_norms_equal_a_hand_tape():
    model, _, _, batch = _mic()
    model.optimizer.iterations.assign(3)
    norms = model.term_gradient_norms(batch)
    assert set(norms) == {"loss", "basic_loss", "uv_loss", "vv_loss", "uu_loss"}
    shared = model.shared_variables()
    noise = model.draw_noise(batch)
    with tf.GradientTape() as tape:
        basic = model.compute_losses(batch, noise=noise)["basic_loss"]
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(basic, shared) if g is not None]
    by_hand = np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads))
    np.testing.assert_allclose(norms["basic_loss"], by_hand, rtol=1e-4)
    assert all(v > 0 for v in norms.values())
