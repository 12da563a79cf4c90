"""A fused C++ GRU op (prototypes/fused_gru.cc) against the library's `unrolled_gru` (issue 7).

    python benchmarks/fused_gru_prototype.py            # compiles with g++, checks, times
    python benchmarks/fused_gru_prototype.py --step     # also the whole GRU4Rec train step
    python benchmarks/fused_gru_prototype.py --matmul_floor   # the step's matrix products alone

Not part of the library: it measures how much of the GRU4Rec step a custom kernel could save.
The op runs the recurrence (Keras' `reset_after=True` GRU, zero initial state) forward and
backward in one call each, batch rows split over TF's intra-op threads, Eigen for the products
and the vectorised sigmoid / tanh. It is checked against `unrolled_gru` (outputs and every
gradient) before anything is timed. Prints one JSON line.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("batch_size", 256, "B.")
flags.DEFINE_integer("maxlen", 20, "L.")
flags.DEFINE_integer("units", 64, "D = H.")
flags.DEFINE_integer("repeats", 7, "Timing rounds (the minimum and median are printed).")
flags.DEFINE_boolean("matmul_floor", False, "Also time the matrix products alone of a full-softmax "
                     "GRU4Rec step (ml-100k shapes, forward and backward, nothing else).")
flags.DEFINE_boolean("step", False, "Also time a fixed-batch GRU4Rec train step (ml-100k, full "
                     "softmax, no XLA) with each recurrence.")
FLAGS = flags.FLAGS

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prototypes", "fused_gru.cc")


def build(tf, out_dir):
    lib = os.path.join(out_dir, "fused_gru.so")
    cmd = ["g++", "-std=c++17", "-shared", "-fPIC", "-O3", "-march=native", "-w", SOURCE,
           "-o", lib, *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
    subprocess.run(cmd, check=True)
    return tf.load_op_library(lib)


def make_fused_gru(tf, mod):
    @tf.RegisterGradient("MicFusedGru")
    def _grad(op, d_states, d_gates):
        del d_gates  # an internal output kept for the backward, never consumed
        return mod.mic_fused_gru_grad(op.inputs[1], op.outputs[0], op.outputs[1], d_states)

    def fused_gru(inputs, kernel, recurrent_kernel, bias):
        steps, dim = inputs.shape[1], inputs.shape[2]
        units = recurrent_kernel.shape[0]
        x = tf.reshape(tf.transpose(inputs, [1, 0, 2]), [-1, dim])
        projected = tf.reshape(tf.matmul(x, kernel) + bias[0], [steps, -1, 3 * units])
        states, _ = mod.mic_fused_gru(projected, recurrent_kernel, bias[1])
        return tf.transpose(states, [1, 0, 2])

    return fused_gru


def timed(fn, repeats, calls=20):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e3)
    times.sort()
    return {"min_ms": round(times[0], 2), "median_ms": round(times[len(times) // 2], 2)}


def recurrence_grads(tf, fn, x, weights):
    @tf.function
    def run():
        with tf.GradientTape() as tape:
            tape.watch(x)
            states = fn(x, *weights)
            loss = tf.reduce_sum(states * tf.linspace(-1.0, 1.0, states.shape[-1]))
        return [states, *tape.gradient(loss, [x, *weights])]
    return run


def train_step_ms(tf, keras, gru_fn, repeats):
    import mic_tf.models.encoders.gru4rec as gru4rec
    from mic_tf.data.pipeline import make_train_dataset
    from mic_tf.data.prepare import prepare_dataset
    from mic_tf.experiment import ExperimentConfig, build_model
    from mic_tf.training.trainer import TrainConfig, make_optimizer

    ds = prepare_dataset("ml-100k", verbose=False)
    cfg = ExperimentConfig(encoder="gru4rec", basic_loss="full_softmax",
                           train=TrainConfig(sampler="all"))
    batch = next(iter(make_train_dataset(ds, batch_size=256, maxlen=20, seed=0, sampler="all")))
    saved, gru4rec.unrolled_gru = gru4rec.unrolled_gru, gru_fn
    try:
        keras.utils.set_random_seed(0)
        model = build_model(cfg, ds)
        model.compile(optimizer=make_optimizer("adam", 1e-3), jit_compile=False)
        model.build_from_batch(batch)
        model.optimizer.build(model.trainable_variables)
        step = tf.function(model.train_step)
        return timed(lambda: step(batch), repeats)
    finally:
        gru4rec.unrolled_gru = saved


def matmul_floor(tf, repeats, b=256, length=20, d=64, items=1350):
    """Every matrix product of a full-softmax GRU4Rec step, chained as in the step (the
    recurrences sequential), with minimal glue: the FLOP floor the step cannot go below."""
    r = lambda *shape: tf.random.normal(shape)  # noqa: E731
    x, w, u, table = r(b * length, d), r(d, 3 * d), r(d, 3 * d), r(items, d)
    dp, h, di, user, dl = r(b * length, 3 * d), r(b, d), r(b, 3 * d), r(b, d), r(b, items)

    @tf.function
    def products():
        out = [tf.matmul(x, w), tf.matmul(user, table, transpose_b=True),
               tf.matmul(dp, w, transpose_b=True), tf.matmul(x, dp, transpose_a=True),
               tf.matmul(dl, table), tf.matmul(dl, user, transpose_a=True)]
        state, grad, partial = h, di, []
        for _ in range(length):
            state = tf.matmul(state, u)[:, :d] * 0.01 + h
            partial.append(tf.matmul(h, grad, transpose_a=True))
            dh = tf.matmul(grad, u, transpose_b=True)
            grad = tf.concat([dh, dh, dh], 1) * 0.01 + di
        return [tf.reduce_sum(o) for o in out + [state, tf.add_n(partial)]]

    flops = 2 * 3 * (b * length * d * 3 * d + length * b * d * 3 * d + b * d * items)
    t = timed(products, repeats)
    return {**t, "mflop": round(flops / 1e6), "gflop_per_s": round(flops / t["min_ms"] / 1e6)}


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf
    import keras
    from mic_tf.models.encoders.gru4rec import unrolled_gru

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        mod = build(tf, tmp)
        build_seconds = round(time.perf_counter() - start, 1)
    fused_gru = make_fused_gru(tf, mod)
    rng = np.random.default_rng(0)
    b, length, d = FLAGS.batch_size, FLAGS.maxlen, FLAGS.units
    x = tf.constant(rng.normal(size=(b, length, d)).astype(np.float32))
    weights = [tf.Variable(rng.normal(size=s).astype(np.float32) * scale)
               for s, scale in (((d, 3 * d), 0.2), ((d, 3 * d), 0.2), ((2, 3 * d), 0.1))]
    ref, fused = (recurrence_grads(tf, fn, x, weights) for fn in (unrolled_gru, fused_gru))
    errors = {name: float(tf.reduce_max(tf.abs(a - c)) / tf.reduce_max(tf.abs(a)))
              for name, a, c in zip(["states", "d_inputs", "d_kernel", "d_recurrent", "d_bias"],
                                    ref(), fused())}
    if max(errors.values()) > 1e-4:
        raise SystemExit(f"fused GRU disagrees with unrolled_gru: {errors}")
    result = {"batch_size": b, "maxlen": length, "units": d, "build_seconds": build_seconds,
              "max_relative_error": max(errors.values()),
              "gru_fwd_bwd": {"unrolled": timed(ref, FLAGS.repeats),
                              "fused": timed(fused, FLAGS.repeats)}}
    if FLAGS.matmul_floor:
        result["matmul_floor"] = matmul_floor(tf, FLAGS.repeats)
    if FLAGS.step:
        result["train_step"] = {"unrolled": train_step_ms(tf, keras, unrolled_gru, FLAGS.repeats),
                                "fused": train_step_ms(tf, keras, fused_gru, FLAGS.repeats)}
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
