"""FusedAdam equals a numpy Adam; LazyAdam: row-wise Adam on sparse gradients, equal to a numpy
oracle; converges like Adam."""

import numpy as np
import tensorflow as tf

import keras
from mic_tf.experiment import ExperimentConfig, build_model
from mic_tf.data.pipeline import make_train_dataset
from mic_tf.data.prepare import prepare_dataset
from mic_tf.training.optimizers import FusedAdam, LazyAdam
from mic_tf.training.trainer import TrainConfig, U2IEvaluator, make_optimizer


def numpy_lazy_adam(table, m, v, rows, grads, t, lr=0.1, b1=0.9, b2=0.999, eps=1e-7):
    """Adam applied to the listed rows only (repeated rows summed first)."""
    table, m, v = table.copy(), m.copy(), v.copy()
    g = {}
    for r, gr in zip(rows, grads):
        g[r] = g.get(r, 0) + gr
    alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    for r, gr in g.items():
        m[r] = b1 * m[r] + (1 - b1) * gr
        v[r] = b2 * v[r] + (1 - b2) * gr ** 2
        table[r] -= alpha * m[r] / (np.sqrt(v[r]) + eps)
    return table, m, v


def test_lazy_adam_updates_only_touched_rows_like_the_oracle():
    rng = np.random.default_rng(0)
    init = rng.normal(size=(6, 3)).astype(np.float32)
    table = keras.Variable(init)
    opt = LazyAdam(learning_rate=0.1)
    opt.build([table])
    m, v = np.zeros_like(init), np.zeros_like(init)
    expected = init
    for t, ids in enumerate([[1, 3, 3], [3, 4]], start=1):
        with tf.GradientTape() as tape:
            rows = tf.gather(table.value, ids)
            loss = tf.reduce_sum(tf.square(rows) * np.arange(1, len(ids) + 1)[:, None])
        grad = tape.gradient(loss, table.value)
        assert isinstance(grad, tf.IndexedSlices)
        opt.apply([grad], [table])
        g_rows = [2 * expected[r] * (j + 1) for j, r in enumerate(ids)]  # d/dx of k * x^2
        expected, m, v = numpy_lazy_adam(expected, m, v, ids, g_rows, t)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    untouched = [0, 2, 5]
    np.testing.assert_array_equal(table.numpy()[untouched], init[untouched])
    assert (opt._momentums[0].numpy()[untouched] == 0).all()
    assert (opt._velocities[0].numpy()[untouched] == 0).all()
    np.testing.assert_allclose(opt._momentums[0].numpy(), m, rtol=1e-5, atol=1e-7)


def test_fused_adam_matches_numpy_adam_in_a_compiled_step():
    """Dense and sparse (made dense, as Keras' Adam does) gradients, three steps in a
    `tf.function`; the oracle is Adam written out in numpy (every row updated every step)."""
    rng = np.random.default_rng(1)
    init_w, init_t = (rng.normal(size=s).astype(np.float32) for s in ((3, 2), (5, 2)))
    w, table = keras.Variable(init_w), keras.Variable(init_t)
    opt = FusedAdam(learning_rate=0.1)
    opt.build([w, table])
    ids = tf.constant([1, 3, 3])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(w.value) * [1.0, 2.0]) + tf.reduce_sum(
                tf.square(tf.gather(table.value, ids)))
        grads = tape.gradient(loss, [w.value, table.value])
        opt.apply(grads, [w, table])

    expected = [init_w.astype(np.float64), init_t.astype(np.float64)]
    moments = [[np.zeros_like(e), np.zeros_like(e)] for e in expected]
    for t in range(1, 4):
        step()
        g_table = np.zeros_like(expected[1])
        for r in ids.numpy():
            g_table[r] += 2 * expected[1][r]
        grads = [2 * expected[0] * [1.0, 2.0], g_table]
        alpha = 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        for i, g in enumerate(grads):
            m, v = moments[i]
            m += (g - m) * 0.1
            v += (g * g - v) * 0.001
            expected[i] = expected[i] - alpha * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(w.numpy(), expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table.numpy(), expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt._velocities[1].numpy(), moments[1][1], rtol=1e-4, atol=1e-8)


def test_dense_gradients_follow_keras_adam():
    """LazyAdam's dense path is FusedAdam's; both agree with Keras' Adam to float32 round-off
    (Keras' own float32 arithmetic is 3e-6 further from the exact value after three steps)."""
    grad = tf.constant([[1.0, -2.0], [0.5, 3.0]])
    results = []
    for opt in (LazyAdam(0.1), FusedAdam(0.1), keras.optimizers.Adam(0.1)):
        var = keras.Variable(np.ones((2, 2), np.float32))
        opt.build([var])
        for _ in range(3):
            opt.apply([grad], [var])
        results.append(var.numpy())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], results[2], rtol=1e-5)


def test_lazy_adam_converges_like_adam_on_ml100k(tmp_path, ml100k_raw_dir):
    ds = prepare_dataset("ml-100k", data_dir=tmp_path, raw_dir=ml100k_raw_dir, verbose=False)
    valid = ds.eval_split("valid", 20)
    evaluator = U2IEvaluator(ds.item_category)
    recall = {}
    for name in ("adam", "lazy_adam"):
        for seed in (0, 1):
            keras.utils.set_random_seed(seed)
            cfg = ExperimentConfig(encoder="youtube_dnn", embedding_dim=32,
                                   train=TrainConfig(batch_size=128, seed=seed))
            model = build_model(cfg, ds)
            model.compile(optimizer=make_optimizer(name, 1e-3))
            data = make_train_dataset(ds, batch_size=128, maxlen=20, seed=seed)
            model.fit(data, steps_per_epoch=400, epochs=1, verbose=0)
            recall[name, seed] = evaluator(model, valid)[0]["recall@50"]
    dense = np.mean([recall["adam", s] for s in (0, 1)])
    lazy = np.mean([recall["lazy_adam", s] for s in (0, 1)])
    seed_noise = abs(recall["adam", 0] - recall["adam", 1]) + abs(
        recall["lazy_adam", 0] - recall["lazy_adam", 1])
    assert dense > 0.15 and lazy > 0.15, recall  # both well above MostPopular (valid ~0.12)
    assert abs(lazy - dense) <= max(0.03, seed_noise), recall


def test_auto_optimizer_is_lazy_adam_only_for_large_catalogues():
    from mic_tf.training.trainer import LAZY_ADAM_MIN_ITEMS, resolve_optimizer

    assert resolve_optimizer("auto", 1349) == "adam"  # ml-100k: ComiRec's dense Adam
    assert resolve_optimizer("auto", LAZY_ADAM_MIN_ITEMS) == "lazy_adam"
    assert resolve_optimizer("adam", 10 ** 7) == "adam"  # an explicit choice is kept
    assert isinstance(make_optimizer("auto", 1e-3, num_items=300_000), LazyAdam)
    assert type(make_optimizer("auto", 1e-3, num_items=1000)) is FusedAdam


def test_xla_is_on_by_default_only_where_adam_is_dense():
    from mic_tf.training.trainer import LAZY_ADAM_MIN_ITEMS, default_jit_compile

    assert default_jit_compile(1349) is True
    assert default_jit_compile(LAZY_ADAM_MIN_ITEMS) is False
    assert default_jit_compile(1349, False) is False  # an explicit choice wins
    assert default_jit_compile(LAZY_ADAM_MIN_ITEMS, True) is True
