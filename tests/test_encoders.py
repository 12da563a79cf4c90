"""Encoders against numpy re-derivations of ComiRec's TF1 code; saving and export round trips."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from mic_tf.models.retrieval_model import RetrievalModel

N_ITEMS, D, L = 20, 8, 5
HISTORY = np.array([[3, 7, 1, 0, 0], [5, 5, 2, 9, 4], [11, 0, 0, 0, 0]], np.int32)


def make(encoder, **kwargs):
    keras.utils.set_random_seed(0)
    model = RetrievalModel(encoder, N_ITEMS, D, L, num_categories=3,
                           encoder_options=kwargs or None)
    model({"history": HISTORY})
    return model


def weights_of(layer):
    return {w.path.split("/")[-1]: keras.ops.convert_to_numpy(w) for w in layer.weights}


def test_youtube_dnn_is_masked_mean_then_dense():
    model = make("youtube_dnn")
    table = keras.ops.convert_to_numpy(model.item_table())
    dense = model.user_tower.dense
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (dense.kernel, dense.bias))
    out = model({"history": HISTORY}).numpy()
    for row, hist in zip(out, HISTORY):
        real = hist[hist > 0]
        np.testing.assert_allclose(row, table[real].mean(0) @ kernel + bias, rtol=1e-4, atol=1e-5)


def test_gru4rec_returns_the_state_after_the_last_real_item():
    model = make("gru4rec")
    out = model({"history": HISTORY}).numpy()
    gru = model.user_tower.gru
    table = keras.ops.convert_to_numpy(model.item_table())
    for row, hist in zip(out, HISTORY):
        real = hist[hist > 0]
        states = gru(table[real][None]).numpy()[0]  # the unpadded sequence alone
        np.testing.assert_allclose(row, states[-1], rtol=1e-4, atol=1e-5)


def test_unrolled_gru_matches_numpy_and_keras_gru_gradients():
    """The CPU recurrence against a numpy transcription of the reset_after equations, and its
    gradients (the reason it exists) against those of Keras' own GRU layer."""
    from mic_tf.models.encoders.gru4rec import unrolled_gru

    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(4, 6, 5)).astype(np.float32))
    gru = keras.layers.GRU(3, return_sequences=True)
    gru.build((None, 6, 5))
    gru.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in gru.weights])
    kernel, rec, bias = (keras.ops.convert_to_numpy(w) for w in gru.weights)
    weights = [gru.cell.kernel, gru.cell.recurrent_kernel, gru.cell.bias]
    probe = tf.constant(rng.normal(size=(4, 6, 3)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = unrolled_gru(x, *weights)
        theirs = gru(x)
        loss_ours, loss_theirs = (tf.reduce_sum(s * probe) for s in (ours, theirs))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros((4, 3))
    for t in range(6):
        xp, hp = x.numpy()[:, t] @ kernel + bias[0], h @ rec + bias[1]
        z, r = sig(xp[:, :3] + hp[:, :3]), sig(xp[:, 3:6] + hp[:, 3:6])
        h = z * h + (1 - z) * np.tanh(xp[:, 6:] + r * hp[:, 6:])
        np.testing.assert_allclose(ours.numpy()[:, t], h, rtol=1e-5, atol=1e-6)
    for a, b in zip(tape.gradient(loss_ours, [x, *weights]),
                    tape.gradient(loss_theirs, [x, *weights])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_comirec_sa_matches_numpy_and_ignores_padding():
    model = make("comirec_sa", num_interests=2)
    t = model.user_tower
    table = keras.ops.convert_to_numpy(model.item_table())
    w1, b1 = (keras.ops.convert_to_numpy(w) for w in (t.hidden.kernel, t.hidden.bias))
    w2, b2 = (keras.ops.convert_to_numpy(w) for w in (t.scores.kernel, t.scores.bias))
    pos = keras.ops.convert_to_numpy(t.position)[0]
    out = model({"history": HISTORY}).numpy()
    for row, hist in zip(out, HISTORY):
        emb = table[hist] * (hist > 0)[:, None]
        logits = (np.tanh((emb + pos) @ w1 + b1) @ w2 + b2).T  # [K, L]
        logits[:, hist == 0] = -np.inf
        att = np.exp(logits - logits.max(1, keepdims=True))
        att /= att.sum(1, keepdims=True)
        np.testing.assert_allclose(row, att @ emb, rtol=1e-4, atol=1e-5)


def numpy_dynamic_routing(emb, mask, w, iterations):
    """ComiRec's CapsuleNetwork(bilinear_type=2) forward pass for one user, in numpy."""
    k_d = w.shape[1]
    d = w.shape[2]
    k = k_d // d
    u_hat = np.einsum("lod,ld->lo", w, emb).reshape(len(emb), k, d).transpose(1, 0, 2)  # [K,L,D]
    b = np.zeros((k, len(emb)))
    for i in range(iterations):
        c = np.exp(b) / np.exp(b).sum(0, keepdims=True)  # softmax over interests
        c = c * mask[None, :]
        s = np.einsum("kl,kld->kd", c, u_hat)
        n2 = (s ** 2).sum(-1, keepdims=True)
        v = n2 / (1 + n2) / np.sqrt(n2 + 1e-9) * s
        if i < iterations - 1:
            b = b + np.einsum("kld,kd->kl", u_hat, v)
    return v


def test_comirec_dr_matches_numpy_routing():
    model = make("comirec_dr", num_interests=3, routing_iterations=3)
    table = keras.ops.convert_to_numpy(model.item_table())
    w = keras.ops.convert_to_numpy(model.user_tower.bilinear)
    out = model({"history": HISTORY}).numpy()
    assert out.shape == (3, 3, D)
    for row, hist in zip(out, HISTORY):
        mask = (hist > 0).astype(np.float64)
        expected = numpy_dynamic_routing(table[hist] * mask[:, None], mask, w, 3)
        np.testing.assert_allclose(row, expected, rtol=1e-3, atol=1e-4)


def test_comirec_dr_routes_stopped_gradients_except_in_the_last_iteration():
    model = make("comirec_dr", num_interests=2, routing_iterations=1)
    w = model.user_tower.bilinear
    with tf.GradientTape() as tape:
        out = model({"history": HISTORY})
        loss = tf.reduce_sum(out)
    assert tape.gradient(loss, w.value) is not None  # one iteration: the last one is not stopped


@pytest.mark.parametrize("encoder", ["youtube_dnn", "gru4rec", "comirec_sa", "comirec_dr"])
def test_keras_round_trip_and_savedmodel_export(encoder, tmp_path):
    model = make(encoder)
    model.set_item_category(np.arange(N_ITEMS + 1) % 4)
    expected = model({"history": HISTORY}).numpy()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded({"history": HISTORY}).numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.item_category),
                                  np.arange(N_ITEMS + 1) % 4)
    model.export_user_tower(str(tmp_path / "user_tower"))
    reloaded = tf.saved_model.load(str(tmp_path / "user_tower"))  # keep it alive while serving
    served = reloaded.serve(tf.constant(HISTORY))
    np.testing.assert_allclose(served.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoder", ["comirec_sa", "comirec_dr"])
def test_one_interest_is_a_single_vector_model(encoder):
    """K = 1 (a diagnostic: ComiRec without multiple interests) gives [B, D] and trains."""
    from mic_tf.models.retrieval_model import RetrievalModel
    from mic_tf.training.optimizers import FusedAdam

    model = RetrievalModel(encoder, 30, 8, 5, encoder_options={"num_interests": 1},
                           num_sampled=20)
    model.compile(optimizer=FusedAdam(1e-2))
    batch = {"history": np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]], np.int32),
             "user_features": np.zeros((2, 0), np.int32), "target": np.array([6, 7], np.int32),
             "user": np.array([0, 1], np.int32)}
    assert model(batch).shape == (2, 8)
    assert np.isfinite(float(model.train_step(batch)["loss"]))
