"""The MIC plugin: InfoNCE against numpy, perturbation properties, mining against brute force,
ablations that remove exactly their term, and a two-step training of every encoder with MIC."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from mic_tf.data.pipeline import make_train_dataset
from mic_tf.experiment import ExperimentConfig, build_model, plugin_parts
from mic_tf.mic import contrastive, mining, perturbation
from mic_tf.mic.model import MICModel
from mic_tf.training.trainer import TrainConfig
from tests.toy_data import toy_dataset


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_info_nce_matches_numpy_on_a_hand_batch():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4)).astype(np.float32)
    pos = rng.normal(size=(3, 2, 4)).astype(np.float32)
    pos_mask = np.array([[1, 1], [1, 0], [0, 0]], bool)  # anchor 2 has no positive
    cands = rng.normal(size=(3, 4)).astype(np.float32)
    cand_mask = ~np.eye(3, dtype=bool)
    hard = rng.normal(size=(3, 1, 4)).astype(np.float32)
    hard_mask = np.array([[1], [0], [1]], bool)
    tau = 0.1
    terms = []
    for i in range(3):
        negs = [unit(a[i]) @ unit(cands[j]) / tau for j in range(3) if cand_mask[i, j]]
        negs += [unit(a[i]) @ unit(hard[i, 0]) / tau] if hard_mask[i, 0] else []
        for p in range(2):
            if pos_mask[i, p]:
                s = unit(a[i]) @ unit(pos[i, p]) / tau
                terms.append(-s + np.log(np.exp(s) + np.sum(np.exp(negs))))
    expected = np.mean(terms)  # 3 valid pairs
    got = contrastive.info_nce(a, pos, pos_mask, cands, cand_mask, tau, hard, hard_mask)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)
    # inputs normalised by the caller (the model normalises rows once, before gathering lists)
    got = contrastive.info_nce(unit(a), unit(pos), pos_mask, unit(cands), cand_mask, tau,
                               unit(hard), hard_mask, unit_inputs=True)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_user_item_loss_is_the_sum_of_both_directions_and_masks_repeated_targets():
    u = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    v = np.array([[1, 0.1], [0.2, 1], [1, 0.1]], np.float32)
    ids = np.array([7, 8, 7])  # rows 0 and 2 share a target: not negatives of each other
    tau = 0.5
    cos = unit(u) @ unit(v).T / tau  # [user, item]

    def direction(sim):
        out = []
        for i in range(3):
            negs = [sim[i, j] for j in range(3) if ids[j] != ids[i]]
            out.append(-sim[i, i] + np.log(np.exp(sim[i, i]) + np.sum(np.exp(negs))))
        return np.mean(out)

    expected = direction(cos) + direction(cos.T)
    got = contrastive.user_item_loss(u, v, ids, tau)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_history_view_masks_items_never_all_and_keeps_order():
    history = tf.constant([[5, 6, 7, 8, 0, 0], [9, 0, 0, 0, 0, 0]] * 200, tf.int32)
    view, length = perturbation.mask_history(history, 0.5, tf.constant([1, 2], tf.int64))
    view, length = view.numpy(), length.numpy()
    assert (length >= 1).all()  # never empty
    for row, n, orig in zip(view, length, history.numpy()):
        kept = row[:n]
        assert (row[n:] == 0).all() and (kept > 0).all()
        assert list(kept) == [x for x in orig if x in set(kept)]  # a subsequence, order kept
    long_rows = length[0::2]
    assert 1.5 < long_rows.mean() < 2.5  # 4 items, p = 0.5: about 2 kept
    assert (view[1::2, 0] == 9).all()  # a one-item history keeps its item
    assert not np.array_equal(view[0::2], history.numpy()[0::2])


def test_item_view_masks_id_or_category_never_both():
    n = 4000
    item = tf.fill([n], 5)
    cat = tf.fill([n], 3)
    seed = tf.constant([4, 5], tf.int64)
    v_item, v_cat = (x.numpy() for x in perturbation.mask_item(item, cat, 0.3, seed, True))
    assert not ((v_item == 0) & (v_cat == 0)).any()
    rate_id, rate_cat = (v_item == 0).mean(), (v_cat == 0).mean()
    # P(id masked) = p - p^2 / 2 = 0.255 (the "both" draws split evenly)
    assert abs(rate_id - 0.255) < 0.03 and abs(rate_cat - 0.255) < 0.03
    same_item, same_cat = perturbation.mask_item(item, cat, 0.3, seed, False)
    assert (same_item.numpy() == 5).all()  # the only field is never masked


def test_user_field_masking_rate():
    fields = tf.ones([5000, 3], tf.int32)
    masked = perturbation.mask_fields(fields, 0.2, tf.constant([0, 9], tf.int64)).numpy()
    assert abs((masked == 0).mean() - 0.2) < 0.02


def brute_knn(x, k):
    x = unit(x)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_mining_knn_matches_brute_force_and_hard_negatives_are_in_other_clusters():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 8)) * 3
    x = (centers[rng.integers(0, 4, 300)] + rng.normal(size=(300, 8))).astype(np.float32)
    nn = mining.search(mining.normalize(x), mining.normalize(x), 5, exclude_self=True)
    np.testing.assert_array_equal(nn, brute_knn(x, 5))
    labels = mining.kmeanspp_labels(mining.normalize(x), 4, 10, 100000, seed=0)
    deep = mining.search(mining.normalize(x), mining.normalize(x), 150, exclude_self=True)
    hard = mining.hard_negatives(deep, labels, 3)
    valid = hard >= 0
    assert valid.mean() > 0.9
    assert (labels[hard[valid]] != np.repeat(labels[:, None], 3, 1)[valid]).all()
    # and they are the *nearest* such neighbours: the first other-cluster entries of the list
    for i in range(0, 300, 37):
        others = [j for j in deep[i] if labels[j] != labels[i]][:3]
        assert list(hard[i][hard[i] >= 0]) == others


def test_mine_shapes_and_one_based_item_ids():
    rng = np.random.default_rng(2)
    users, items = rng.normal(size=(50, 6)), rng.normal(size=(31, 6))  # 30 items + padding
    cfg = mining.MiningConfig(num_positives=3, num_hard_negatives=2, num_cross=4, num_clusters=3,
                              search_k=10)
    out = mining.mine(users, items, users, items, cfg)
    assert out.user_pos.shape == (50, 3) and out.item_pos.shape == (31, 3)
    assert (out.item_pos[0] == -1).all() and out.item_pos[1:].min() >= 1
    assert out.user_items.shape == (50, 4) and out.user_items.min() >= 1
    np.testing.assert_array_equal(out.item_pos[1:], brute_knn(items[1:], 3) + 1)
    assert out.item_users.shape == (31, 4) and (out.item_users[0] == -1).all()


def mic_setup(encoder, ablation="full", steps=2):
    ds = toy_dataset(num_users=80, num_items=40)
    cfg = ExperimentConfig(encoder=encoder, plugin="mic", ablation=ablation, embedding_dim=8,
                           use_category=True, train=TrainConfig(batch_size=16, maxlen=5))
    cfg.mic.mining_every = 1
    cfg.mic.mining.num_clusters = 3
    keras.utils.set_random_seed(0)
    model = build_model(cfg, ds)
    map_fn, callbacks = plugin_parts(cfg, ds, lambda msg: None)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = make_train_dataset(ds, batch_size=16, maxlen=5, seed=0, map_fn=map_fn)
    return ds, model, data, callbacks


@pytest.mark.parametrize("encoder", ["youtube_dnn", "gru4rec", "comirec_sa", "comirec_dr"])
def test_two_training_steps_of_every_encoder_with_mic(encoder):
    ds, model, data, callbacks = mic_setup(encoder)
    before = [w.numpy().copy() for w in model.trainable_variables]
    history = model.fit(data, steps_per_epoch=2, epochs=1, verbose=0, callbacks=callbacks)
    for name in ("loss", "basic_loss", "uv_loss", "vv_loss", "uu_loss"):
        assert np.isfinite(history.history[name][-1]) and history.history[name][-1] > 0
    assert (keras.ops.convert_to_numpy(model.user_pos) >= 0).any()  # mining ran and was stored
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_variables)]
    assert all(changed)


TERM_HEADS = {"-ui": ("uv_loss", ("user_projection", "item_projection")),
              "-uu": ("uu_loss", ("user_user_projection",)),
              "-ii": ("vv_loss", ("item_item_projection",))}


@pytest.mark.parametrize("ablation", sorted(TERM_HEADS))
def test_each_ablation_removes_exactly_its_term(ablation):
    ds, model, data, callbacks = mic_setup("youtube_dnn", ablation)
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0, callbacks=callbacks)  # mines
    batch = next(iter(data))
    term, heads = TERM_HEADS[ablation]
    with tf.GradientTape() as tape:
        values = model.compute_losses(batch)
    assert float(values[term]) == 0.0
    others = [k for k in ("uv_loss", "vv_loss", "uu_loss") if k != term]
    assert all(float(values[k]) > 0 for k in others)
    expected = 0.7 * values["basic_loss"] + 0.3 * sum(values[k] for k in others)
    np.testing.assert_allclose(values["loss"].numpy(), expected.numpy(), rtol=1e-6)
    head_vars = [v for v in model.trainable_variables if v.path.split("/")[0] in heads]
    assert head_vars
    grads = tape.gradient(values["loss"], head_vars)
    assert all(g is None for g in grads)  # the removed term's heads receive no gradient


def np_lowbias32(h):
    h = h.astype(np.uint64)  # exact products, then mod 2^32 by hand
    h ^= h >> 16
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x846CA68B) & 0xFFFFFFFF
    return h ^ (h >> 16)


def np_keep_mask(shape, seed, rate):
    k0, k1 = (int(s) & 0xFFFFFFFF for s in seed)
    index = np.arange(int(np.prod(shape)), dtype=np.uint64)
    bits = np_lowbias32(np_lowbias32((index + k0) & 0xFFFFFFFF) ^ k1)
    return (bits >= round(rate * 2**32)).reshape(shape)


def test_hash_keep_mask_matches_numpy_and_keeps_one_minus_rate():
    x = tf.zeros([64, 20, 32])
    seed = tf.constant([-(2**40) - 7, 2**35 + 12345], tf.int64)  # negative and > 32-bit values
    got = perturbation.hash_keep_mask(x, seed, 0.2).numpy()
    np.testing.assert_array_equal(got, np_keep_mask(x.shape, seed.numpy(), 0.2))
    assert abs(got.mean() - 0.8) < 0.01  # 40,960 draws: sd 0.002
    other = perturbation.hash_keep_mask(x, seed + [0, 1], 0.2).numpy()
    assert abs((got == other).mean() - (0.8**2 + 0.2**2)) < 0.01  # independent across seeds
    flat = got.reshape(-1).astype(float)
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.03  # neighbours independent
    assert perturbation.hash_keep_mask(x, seed, 0.0).numpy().all()


def test_view_dropout_uses_the_hash_mask_of_the_step_seed():
    """User view: stream 20 of the step seed, item view: stream 21; inverted dropout at 0.2."""
    _, model, data, _ = mic_setup("youtube_dnn")
    model.optimizer.build(model.trainable_variables)
    batch = next(iter(data))
    noise = model.draw_noise(batch)
    for stream, key, shape in ((20, "user_view", [16, 5, 8]), (21, "item_view", [16, 8])):
        seed = model.step_seed(stream).numpy()
        np.testing.assert_array_equal(noise[key].numpy(), seed)
        x = np.random.default_rng(stream).normal(size=shape).astype(np.float32)
        expected = np.where(np_keep_mask(shape, seed, 0.2), x / 0.8, 0.0)
        np.testing.assert_allclose(model._dropout(noise[key])(tf.constant(x)).numpy(), expected,
                                   rtol=1e-6)


def test_xla_compiled_update_trains_like_the_plain_one():
    """`compile(jit_compile=True)` compiles the update only (noise drawn outside): two MIC steps
    (SGD, so that float round-off is not amplified as Adam's sign-like first steps would) give
    the same losses and weights as without XLA."""
    results = []
    for jit in (False, True):
        _, model, data, _ = mic_setup("gru4rec")
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        history = model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
        results.append((history.history, [w.numpy() for w in model.trainable_variables]))
    (logs, weights), (xla_logs, xla_weights) = results
    for name in ("loss", "uv_loss", "vv_loss", "uu_loss"):
        np.testing.assert_allclose(logs[name], xla_logs[name], rtol=1e-4)
    for a, b in zip(weights, xla_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_perturbation_and_mining_ablations():
    _, model, data, callbacks = mic_setup("youtube_dnn", "-perturbation")
    assert "history_view" not in next(iter(data))  # no field masking in the pipeline
    assert model.perturbation is False and callbacks
    _, model, data, callbacks = mic_setup("youtube_dnn", "-mining")
    assert callbacks == [] and "history_view" in next(iter(data))
    values = model.compute_losses(next(iter(data)))
    assert all(np.isfinite(float(v)) for v in values.values())


def test_mic_model_round_trips_through_keras_file(tmp_path):
    ds, model, data, callbacks = mic_setup("comirec_sa")
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0, callbacks=callbacks)
    batch = next(iter(data))
    expected = model(batch).numpy()
    model.save(tmp_path / "mic.keras")
    loaded = keras.models.load_model(tmp_path / "mic.keras")
    assert isinstance(loaded, MICModel) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(batch).numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.user_pos),
                                  keras.ops.convert_to_numpy(model.user_pos))
    # Our `compile` (XLA routing) is called on load: the model comes back compiled, trainable.
    assert type(loaded.optimizer) is type(model.optimizer) and loaded._xla_update is False
    loaded.fit(data, steps_per_epoch=1, epochs=1, verbose=0)


@pytest.mark.parametrize("ablation", ["full", "-perturbation", "-mining"])
def test_whole_bank_projection_equals_projecting_the_listed_rows(ablation, monkeypatch):
    """Small banks are projected whole and the lists gather from the result; large ones gather
    first. Both must give the same losses and gradients (the rule only picks the cheaper one)."""
    import mic_tf.mic.model as mic_model
    rule = mic_model.project_whole_bank
    _, model, data, callbacks = mic_setup("comirec_sa", ablation)
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0, callbacks=callbacks)  # mines
    batch = next(iter(data))
    noise = model.draw_noise(batch)
    results = []
    for whole in (True, False):
        monkeypatch.setattr(mic_model, "project_whole_bank", lambda rows, shape, w=whole: w)
        with tf.GradientTape() as tape:
            values = model.compute_losses(batch, noise=noise)
        grads = tape.gradient(values["loss"], model.trainable_variables)
        results.append((values, [tf.convert_to_tensor(g).numpy() for g in grads]))
    (v1, g1), (v2, g2) = results
    for key in v1:
        np.testing.assert_allclose(v1[key].numpy(), v2[key].numpy(), rtol=2e-5, err_msg=key)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the default rule: a 41-row item table and an 80-user bank against 16 x 10 listed rows
    assert rule(41, (16, 10)) and not rule(161, (16, 10)) and not rule(41, (None, 10))
