"""RecBole 1.2.1's GRU4Rec training throughput on MovieLens-100K, printing a final JSON line.

Measures examples/s of RecBole's own training path (its Config, create_dataset, data_preparation,
GRU4Rec model and train dataloader) with a manual loop that does what RecBole's
`Trainer._train_epoch` does per batch: `interaction.to(device)`, `zero_grad`,
`model.calculate_loss(interaction)`, `loss.item()`, backward, Adam step. Dataset loading and
`--warmup_steps` untimed steps come first; then epochs over the train dataloader run until
`--seconds` have passed, and examples = the summed sizes of the batches trained in that window
(RecBole keeps the last, partial batch of each epoch).

It runs in its own venv (RecBole needs PyTorch; see benchmarks/README.md), from the repo root:

    /work/venvs/recbole/bin/python benchmarks/recbole_throughput.py --seconds=20

The workload matches

    python benchmarks/train_throughput.py --encoder=gru4rec --basic_loss=full_softmax \
        --sampler=all --batch_size=256 --maxlen=20 --embedding_dim=64

- data: datasets/raw/ml-100k/ml-100k.inter (RecBole atomic file), items and users with >= 5
  interactions kept (as our ComiRec protocol; 1,349 items here and there);
- examples: every prefix of each user's time-ordered sequence, `(seq[:k], seq[k])` for k >= 1,
  history truncated to the last `--maxlen` items (RecBole's default sequential augmentation, as our
  `all` sampler); RecBole splits each user's examples 80/10/10 in time order (`RS` + `TO`), so its
  training set is the first 80% of every user's examples (79,488 examples), while ours is all
  examples of 80% of the users (78,880, of which 308 full batches); both shuffle every epoch;
- model: item embedding (D = 64) -> GRU (1 layer, hidden 64) -> the state at the last real item;
  RecBole's GRU has no bias and adds a Linear(64, 64) after the GRU, and its dropout on the
  embeddings is set to 0 here (RecBole's default is 0.3; ours has none);
- loss: full softmax cross-entropy over the whole item table (`loss_type='CE'`, no negative
  sampling; RecBole's table includes the padding row 0, ours only rows 1..N);
- optimizer: Adam, lr 1e-3, batch 256, float32 on the CPU;
- only user_id, item_id and timestamp are loaded (no rating, no .item/.user features).

Threads: `--threads` defaults to all cores and OpenMP keeps its default wait policy, RecBole's
fastest setting on a quiet machine (10.4k examples/s here; 7.2k with PASSIVE). While other
processes keep both cores busy, pass `--omp_wait_policy=PASSIVE` (or `--threads=1`): with the
active policy a GRU step with 2 threads then took 9-50x longer (each of the many tiny
per-timestep parallel regions waits for a descheduled peer).

RecBole 1.2.1 turns on `torch.autograd.set_detect_anomaly(True)` globally when
`recbole.model.sequential_recommender` is imported (module `sine.py` does it at import time), which
slows every backward pass; it is switched off again here unless `--anomaly_detection`.
"""

import json
import logging
import os
import resource
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_PATH = os.path.join(REPO, "datasets", "raw")

try:
    from absl import app, flags
except ImportError:  # pragma: no cover - absl-py is installed in the recbole venv
    app = flags = None

OPTIONS = [  # (name, type, default, help)
    ("seconds", float, 20.0, "Timed training seconds."),
    ("warmup_steps", int, 20, "Untimed training steps first."),
    ("batch_size", int, 256, "train_batch_size."),
    ("maxlen", int, 20, "MAX_ITEM_LIST_LENGTH."),
    ("embedding_dim", int, 64, "embedding_size = hidden_size."),
    ("threads", int, os.cpu_count() or 1, "torch.set_num_threads."),
    ("omp_wait_policy", str, "", "OMP_WAIT_POLICY for torch's OpenMP pool, set before torch "
     "is imported unless already in the environment ('' = leave OpenMP's default)."),
    ("anomaly_detection", bool, False, "Leave torch's anomaly detection on (RecBole turns it on)."),
    ("dropout_prob", float, 0.0, "GRU4Rec embedding dropout (RecBole's default is 0.3)."),
    ("seed", int, 2020, "RecBole seed."),
    ("data_path", str, DEFAULT_DATA_PATH, "Folder holding ml-100k/ml-100k.inter."),
]

if flags is not None:
    _define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_boolean,
               str: flags.DEFINE_string}
    for _name, _type, _default, _help in OPTIONS:
        _define[_type](_name, _default, _help)
    FLAGS = flags.FLAGS


def parse_argparse(argv):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, typ, default, help_ in OPTIONS:
        if typ is bool:
            parser.add_argument(f"--{name}", default=default, help=help_,
                                type=lambda s: s.lower() in ("1", "true", "yes"), nargs="?",
                                const=True)
        else:
            parser.add_argument(f"--{name}", type=typ, default=default, help=help_)
    return parser.parse_args(argv[1:])


def run(opts):
    if opts.omp_wait_policy:
        os.environ.setdefault("OMP_WAIT_POLICY", opts.omp_wait_policy)
    warnings.simplefilter("ignore", FutureWarning)  # RecBole 1.2.1's pandas idioms
    logging.getLogger().setLevel(logging.WARNING)  # RecBole logs to the root logger
    import torch

    torch.set_num_threads(opts.threads)
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import GRU4Rec  # imports sine.py: anomaly on
    from recbole.utils import init_seed

    anomaly_after_import = torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(bool(opts.anomaly_detection))

    tmp = tempfile.TemporaryDirectory(prefix="recbole_bench_")
    work_dir = tmp.name
    config_dict = {
        "data_path": opts.data_path,
        "checkpoint_dir": os.path.join(work_dir, "saved"),
        "save_dataset": False,
        "save_dataloaders": False,
        "use_gpu": False,
        "device": "cpu",
        "worker": 0,
        "seed": opts.seed,
        "show_progress": False,
        "state": "WARNING",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[5,inf)",
        "item_inter_num_interval": "[5,inf)",
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "TO",
                      "mode": "full"},
        "MAX_ITEM_LIST_LENGTH": opts.maxlen,
        "train_batch_size": opts.batch_size,
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "embedding_size": opts.embedding_dim,
        "hidden_size": opts.embedding_dim,
        "num_layers": 1,
        "dropout_prob": opts.dropout_prob,
        "learner": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
    }
    cwd = os.getcwd()
    os.chdir(work_dir)  # anything RecBole writes relative to the cwd lands in the temp dir
    try:
        config = Config(model="GRU4Rec", dataset="ml-100k", config_dict=config_dict)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
    finally:
        os.chdir(cwd)
        tmp.cleanup()
    device = torch.device("cpu")
    init_seed(config["seed"], config["reproducibility"])
    model = GRU4Rec(config, train_data.dataset).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"],
                                 weight_decay=config["weight_decay"])
    train_examples = len(train_data.dataset)

    def step(interaction):
        interaction = interaction.to(device)
        optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss_value = loss.item()  # as Trainer._train_epoch (total_loss += loss.item())
        if loss_value != loss_value:
            raise ValueError("training loss is nan")
        loss.backward()
        optimizer.step()
        return len(interaction)

    def batches():
        while True:  # epochs
            yield from train_data

    it = batches()
    for _ in range(opts.warmup_steps):
        step(next(it))
    steps = examples = 0
    start = time.perf_counter()
    while time.perf_counter() - start < opts.seconds:
        examples += step(next(it))
        steps += 1
    elapsed = time.perf_counter() - start

    result = {"framework": "recbole", "recbole_version": recbole.__version__,
              "torch_version": torch.__version__, "model": "GRU4Rec", "loss": "CE",
              "batch_size": opts.batch_size, "maxlen": opts.maxlen,
              "embedding_dim": opts.embedding_dim, "threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
              "anomaly_detection": torch.is_anomaly_enabled(),
              "anomaly_enabled_by_import": anomaly_after_import,
              "dropout_prob": opts.dropout_prob,
              "num_items": int(dataset.item_num) - 1,  # without RecBole's padding id 0
              "train_examples_per_epoch": train_examples,
              "steps": steps, "seconds": round(elapsed, 2),
              "examples_per_sec": round(examples / elapsed, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))


def main(argv):
    if flags is not None:
        del argv
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        run(FLAGS)
    else:
        run(parse_argparse(argv))


if __name__ == "__main__":
    if app is not None:
        app.run(main)
    else:
        main(sys.argv)
