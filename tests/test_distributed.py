"""Multi-worker training (spec 10) on localhost: two workers with global batch B against one
process with batch B, a full run through the launcher, a worker killed and the job resumed,
and the flag combinations that cannot work."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from mic_tf.data.pipeline import make_train_dataset
from mic_tf.distributed.cluster import parse_tf_config
from mic_tf.errors import UsageError
from mic_tf.experiment import build_model, plugin_parts
from mic_tf.training.trainer import make_optimizer
from tests.conftest import REPO
from tests.toy_config import toy_setup

STEPS = 20
LAUNCH = [sys.executable, "-m", "mic_tf.distributed.launch"]
RUN_SMALL = ["--dataset=synthetic", "--synthetic_users=300", "--synthetic_items=200",
             "--encoder=youtube_dnn", "--batch_size=32", "--embedding_dim=16", "--eval_every=20",
             "--patience=100", "--seed=1", "--verbose=2"]


def single_process_losses(encoder, plugin, basic_loss, steps=STEPS):
    """The oracle: the step `fit` runs (`train_update` on the whole batch, noise drawn as
    `train_step` draws it), with MIC's mining callback after each step as `fit` calls it."""
    ds, cfg = toy_setup(encoder, plugin, basic_loss)
    keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(cfg, ds)
    map_fn, callbacks = plugin_parts(cfg, ds, lambda msg: None)
    model.compile(optimizer=make_optimizer("adam", cfg.train.learning_rate), jit_compile=False)
    t = cfg.train
    data = iter(make_train_dataset(ds, batch_size=t.batch_size, maxlen=t.maxlen, seed=t.seed,
                                   map_fn=map_fn))
    model.build_from_batch(next(iter(make_train_dataset(
        ds, batch_size=t.batch_size, maxlen=t.maxlen, seed=t.seed, map_fn=map_fn))))
    model.optimizer.build(model.trainable_variables)
    for callback in callbacks:
        callback.set_model(model)
    step = tf.function(lambda batch: model.train_update(batch, model.draw_noise(batch)))
    losses = []
    for s in range(1, steps + 1):
        losses.append({k: float(v) for k, v in step(next(data)).items()})
        for callback in callbacks:
            if callback.due(s):
                callback.mine(s)
    return losses


def launch(args, workers=2, script=None, timeout=240):
    extra = [f"--script={script}"] if script else []
    return subprocess.run(LAUNCH + [f"--workers={workers}", *extra, "--", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("encoder,plugin,basic_loss", [
    ("youtube_dnn", "none", "sampled_softmax"),
    ("gru4rec", "none", "logistic"),
    ("comirec_sa", "mic", "sampled_softmax"),
])
def test_two_workers_compute_the_losses_of_one_process_with_the_global_batch(
        tmp_path, encoder, plugin, basic_loss):
    """20 steps, 2 workers x 8 users against 1 process x 16 users: every loss term within
    rtol 1e-5 (float32 sums in another order: the all-gathered candidates, the loss split in
    two shares; the largest measured difference was 2e-7 relative, ComiRec-SA + MIC). With
    MIC, four minings happen on the chief and reach both workers (a mined list that differed
    would change the losses at once)."""
    out = tmp_path / "losses.json"
    result = launch([f"--encoder={encoder}", f"--plugin={plugin}", f"--basic_loss={basic_loss}",
                     f"--steps={STEPS}", f"--out={out}", f"--run_dir={tmp_path / 'run'}"],
                    script=str(REPO / "tests" / "distributed_steps.py"))
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(out.read_text())
    expected = single_process_losses(encoder, plugin, basic_loss)
    assert len(got["losses"]) == STEPS
    names = sorted(expected[0])
    assert sorted(got["losses"][0]) == names
    if plugin == "mic":
        assert {"uv_loss", "vv_loss", "uu_loss"} <= set(names) and got["mined"] > 0
    for s, (a, b) in enumerate(zip(got["losses"], expected)):
        for name in names:
            assert a[name] == pytest.approx(b[name], rel=1e-5, abs=1e-6), (s + 1, name)
    # training moved the losses (the comparison is not between two constants)
    assert got["losses"][0]["loss"] != got["losses"][-1]["loss"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted 2-worker run through the launcher (160 steps, valid every 20)."""
    tmp = tmp_path_factory.mktemp("full")
    out = tmp / "run"
    result = launch(RUN_SMALL + ["--max_steps=160", f"--data_dir={tmp / 'data'}",
                                 f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


def test_launcher_full_run_writes_the_normal_run_folder(full_run):
    out, result = full_run
    final = json.loads(result.stdout.strip().splitlines()[-1])  # the chief's JSON line only
    assert final["output_dir"] == str(out) and "test" in final
    for name in ("flags.json", "metrics.json", "recommendations.jsonl",
                 "checkpoints/state.json", "checkpoints/best.weights.h5", "user_tower"):
        assert (out / name).exists(), name
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1  # chief only
    flags = json.loads((out / "flags.json").read_text())
    assert flags["distribute"] == "multi_worker" and flags["workers"] == 2
    assert flags["jit_compile"] is False
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["workers"] == 2 and metrics["run"]["steps"] == 160
    assert 0 <= metrics["test"]["recall@50"] <= 1


def test_a_killed_worker_stops_the_job_and_a_rerun_resumes(tmp_path, full_run):
    """SIGKILL to worker 1 after the first checkpoint: the launcher names it, stops the chief and
    exits 1; the same command then resumes from the checkpoint and reaches the metrics of the
    uninterrupted run (`full_run`, same flags and data)."""
    out = tmp_path / "run"
    run_args = RUN_SMALL + ["--max_steps=160", f"--data_dir={tmp_path / 'data'}",
                            f"--output_dir={out}"]
    log = tmp_path / "launcher.err"  # a file, not a pipe: the workers log a lot meanwhile
    with open(log, "w") as err:
        proc = subprocess.Popen(LAUNCH + ["--workers=2", "--grace_seconds=5", "--", *run_args],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True)
        state = out / "checkpoints" / "state.json"
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if state.exists() and json.loads(state.read_text())["evals_done"] >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before a worker could be killed"
        launched = next(line for line in log.read_text().splitlines()
                        if line.startswith("launched 2 workers"))
        worker1 = int(launched.rsplit("worker 1 pid ", 1)[1])
        os.kill(worker1, signal.SIGKILL)
        assert proc.wait(timeout=120) == 1
    assert f"error: worker 1 (pid {worker1}) was killed by SIGKILL" in log.read_text()
    killed_at = json.loads(state.read_text())["evals_done"]
    assert killed_at < 8 and not (out / "metrics.json").exists()
    result = launch(run_args)
    assert result.returncode == 0, result.stderr[-4000:]
    resumed = [line for line in result.stderr.splitlines() if "resuming from step" in line]
    assert resumed and int(resumed[0].split("resuming from step ")[1].split()[0]) >= 20
    resumed_metrics = json.loads((out / "metrics.json").read_text())
    assert resumed_metrics["run"]["steps"] == 160
    uninterrupted = json.loads((full_run[0] / "metrics.json").read_text())
    for split in ("valid", "test"):
        for name, value in uninterrupted[split].items():
            assert resumed_metrics[split][name] == pytest.approx(value, abs=1e-9), (split, name)


def test_tf_config_errors_name_what_to_change():
    with pytest.raises(UsageError, match="needs the TF_CONFIG environment variable"):
        parse_tf_config(None)
    with pytest.raises(UsageError, match="not valid"):
        parse_tf_config("{not json")
    with pytest.raises(UsageError, match=r"\['ps'\].*ParameterServerStrategy"):
        parse_tf_config(json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]},
                                    "task": {"type": "worker", "index": 0}}))
    with pytest.raises(UsageError, match="not in its cluster"):
        parse_tf_config(json.dumps({"cluster": {"worker": ["a:1"]},
                                    "task": {"type": "worker", "index": 1}}))
    chief = parse_tf_config(json.dumps({"cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                                        "task": {"type": "worker", "index": 0}}))
    assert chief.num_workers == 2 and not chief.is_chief


def run_py(args, env=None):
    return subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_run_py_refuses_impossible_distributed_flags(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    no_config = subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"),
                                "--distribute=multi_worker", f"--output_dir={tmp_path / 'a'}"],
                               cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert no_config.returncode == 1
    assert "needs the TF_CONFIG environment variable" in no_config.stderr
    two = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                      "task": {"type": "worker", "index": 0}})
    odd = run_py(["--distribute=multi_worker", "--batch_size=33",
                  f"--output_dir={tmp_path / 'b'}"], env={"TF_CONFIG": two})
    assert odd.returncode == 1 and "--batch_size=33 is not allowed with 2 workers" in odd.stderr
    # (--jit_compile with --distribute=multi_worker: tests/test_flags.py FLAG_CASES)
    assert not any((tmp_path / d).exists() for d in "ab")


REPLICA_HELPERS = r"""
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mic_tf.data.pipeline import make_train_dataset
from mic_tf.models import replicas
from tests.toy_data import toy_dataset

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
batch = next(iter(make_train_dataset(toy_dataset(num_users=80), batch_size=16, maxlen=5, seed=1)))
x = tf.constant(np.arange(16 * 3, dtype=np.float32).reshape(16, 3))

def fn():
    users = replicas.local_rows(batch["user"], 8)
    rows = replicas.local_rows(x, 8)
    return {"users": users, "gathered": replicas.gather(users), "replica": replicas.replica_index(),
            "mean": replicas.global_mean(tf.reduce_sum(rows), tf.size(rows)),
            "offset": replicas.flat_offset(rows), "n": tf.constant(replicas.num_replicas())}

out = strategy.run(fn)
local = {k: [t.numpy().tolist() for t in strategy.experimental_local_results(v)]
         for k, v in out.items()}
print(json.dumps({"local": local, "users": batch["user"].numpy().tolist(),
                  "alone": float(replicas.global_mean(tf.reduce_sum(x), tf.size(x)))}))
"""


def test_replica_helpers_split_the_global_batch_on_two_in_process_replicas():
    """Two replicas (two logical CPUs, MirroredStrategy): each holds its half of the global
    batch (distinct users, together the whole batch), `gather` returns the global batch in
    replica order, the replicas' `global_mean` shares add up to the global mean, and the dropout
    offset of replica r is r x its block size; alone, every helper is the identity."""
    result = subprocess.run([sys.executable, "-c", REPLICA_HELPERS], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    local, users = got["local"], got["users"]
    assert local["n"] == [2, 2] and local["replica"] == [0, 1]
    assert local["users"][0] + local["users"][1] == users and len(set(users)) == 16
    assert local["gathered"] == [users, users]
    mean = np.arange(48).mean()
    assert sum(local["mean"]) == pytest.approx(mean) and got["alone"] == pytest.approx(mean)
    assert local["offset"] == [0, 24]
