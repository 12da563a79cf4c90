"""Train and evaluate one model (spec 8).

    python experiments/run.py --encoder=gru4rec --plugin=none
    python experiments/run.py --dataset=ml-1m --encoder=comirec_sa --seed=3 --output_dir=runs/x
    python experiments/run.py --flagfile=my.flags

Prepares the dataset if needed, trains with early stopping on valid recall@50, evaluates the test
users once with the best weights and writes OUT/{metrics.json, flags.json, recommendations.jsonl,
tensorboard/, checkpoints/, user_tower/}. Killed and restarted with the same command, it resumes
from its last checkpoint.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
# The repository root replaces this script's folder on the path: experiments/select.py would
# otherwise shadow the standard library's `select` (imported by subprocess, socket, ...).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from experiments import interrupts  # noqa: E402

RESUME = "run the same command again to resume from the last checkpoint"
interrupts.install(RESUME)

from absl import app, flags, logging  # noqa: E402

from experiments import common_flags, defaults, flagfiles  # noqa: E402
from mic_tf.data.pipeline import SAMPLERS  # noqa: E402
from mic_tf.errors import MicError  # noqa: E402
from mic_tf.models.encoders import ENCODERS  # noqa: E402
from mic_tf.mic.model import ABLATIONS  # noqa: E402
from mic_tf.models.losses import BASIC_LOSSES  # noqa: E402

flags.DEFINE_enum("encoder", "gru4rec", sorted(ENCODERS), "User-tower encoder.")
flags.DEFINE_enum("plugin", "none", ["none", "mic"], "`mic` adds the MIC plugin (X + MIC).")
flags.DEFINE_enum("ablation", "full", list(ABLATIONS), "MIC ablation (paper Table 4).")
flags.DEFINE_enum("basic_loss", "sampled_softmax", BASIC_LOSSES, "Basic retrieval loss.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, sampling and negatives.")
flags.DEFINE_string("output_dir", None, "Run folder (default runs/DATASET/ENCODER-PLUGIN-sSEED).")
flags.DEFINE_enum("sampler", "comirec", SAMPLERS, "Training-example sampler (spec 2.3).")
flags.DEFINE_integer("batch_size", None, "Batch size (default per dataset).")
flags.DEFINE_integer("maxlen", None, "History length L (default per dataset).")
flags.DEFINE_integer("embedding_dim", None, "Embedding / hidden size D.")
flags.DEFINE_float("learning_rate", None, "Adam learning rate (default 1e-3; 5e-3 for DR).")
flags.DEFINE_integer("max_steps", None, "Maximum training steps (default per dataset).")
flags.DEFINE_integer("max_epochs", None, "Maximum epochs of the sampler; overrides max_steps.")
flags.DEFINE_integer("eval_every", None, "Steps between validations (default per dataset).")
flags.DEFINE_integer("patience", None, "Validations without improvement before stopping.")
flags.DEFINE_float("patience_loss_drop", 0.0, "> 0: validations without gain count toward "
                   "--patience only once a period's basic loss is this fraction below the first "
                   "period's (e.g. 0.05), so a run still on its starting plateau is not stopped; "
                   "0: ComiRec's rule (every one counts).")
flags.DEFINE_integer("num_interests", 4, "K for the multi-interest encoders.")
flags.DEFINE_integer("routing_iterations", 3, "Dynamic-routing iterations (ComiRec-DR).")
flags.DEFINE_integer("num_sampled", None, "Sampled-softmax negatives per batch "
                     "(default 10 x batch_size, as ComiRec).")
flags.DEFINE_integer("logistic_negatives", 10, "Negatives per example for --basic_loss=logistic.")
flags.DEFINE_float("logistic_temperature", 0.1, "tau_b of the logistic loss (eq. 9).")
flags.DEFINE_boolean("use_category", False, "Item tower adds a category embedding.")
flags.DEFINE_boolean("use_user_features", False, "User tower adds user-field embeddings.")
flags.DEFINE_boolean("exclude_history", False, "Drop history items from the ranked lists "
                     "(off in the ComiRec protocol).")
# MIC plugin (spec 3.3)
flags.DEFINE_float("mic_lambda", 0.7, "lam of eq. 10: weight of the basic loss.")
flags.DEFINE_float("w_uv", 1.0, "Weight of L_uv (user-item contrast).")
flags.DEFINE_float("w_vv", 1.0, "Weight of L_vv (item-item contrast).")
flags.DEFINE_float("w_uu", 1.0, "Weight of L_uu (user-user contrast).")
flags.DEFINE_float("temperature", 0.1, "tau of the InfoNCE losses.")
flags.DEFINE_float("dropout", 0.2, "Embedding dropout of the perturbed views.")
flags.DEFINE_float("p_mask", 0.2, "Field-masking probability of the perturbed views.")
flags.DEFINE_integer("mining_every", None, "Steps between nearest-neighbour minings.")
flags.DEFINE_integer("mining_start", 0, "Step of the first mining (0: at --mining_every). "
                     "Neighbours of an untrained model are noise (spec 3.3).")
flags.DEFINE_boolean("mining_on_plateau", False, "Start mining at the first validation that does "
                     "not improve (instead of --mining_start).")
flags.DEFINE_float("mined_weight", None, "Weight of the mined positives against the real one "
                   "(the view / the target), per anchor; unset: every positive pair alike.")
flags.DEFINE_integer("contrastive_start", 0, "Contrastive losses off before this step.")
flags.DEFINE_integer("ramp_steps", 0, "Then ramp their weight linearly from 0 to 1 over this "
                     "many steps (0: at once).")
flags.DEFINE_enum("uu_anchor", "mean", ["mean", "readout"], "Multi-interest user vector of "
                  "L_uu: the renormalised mean of the interests (as the user bank and U2U) or "
                  "the readout against the target.")
flags.DEFINE_boolean("single_channel_heads", True, "L_uu / L_vv in their own projection "
                     "heads' space (else directly in the encoder space).")
flags.DEFINE_enum("hard_negatives", "nearest", ["nearest", "random"], "Hard negatives: the "
                  "nearest neighbours in other clusters, or random members of other clusters.")
flags.DEFINE_integer("num_positives", 5, "Mined kNN positives per user / item.")
flags.DEFINE_integer("num_hard_negatives", 5, "Mined hard negatives per user / item.")
flags.DEFINE_integer("num_cross", 5, "Mined user->item / item->user positives.")
flags.DEFINE_integer("num_clusters", 20, "k-means++ clusters for hard negatives.")
flags.DEFINE_integer("mining_search_k", 50, "Neighbours searched for hard negatives.")
# Cross-channel inference (spec 4; --plugin=mic)
flags.DEFINE_integer("k1", None, "U2I candidates (default N = 50).")
flags.DEFINE_integer("m1", 40, "U2U: similar training users.")
flags.DEFINE_integer("m2", 60, "U2U: last items taken from each similar user.")
flags.DEFINE_integer("m_history", 30, "I2I: last history items used as queries (the paper's M).")
flags.DEFINE_integer("m3", 50, "I2I: similar items per history item.")
flags.DEFINE_float("lam_mic", 0.5, "Weight of Score_MIC (softmax of channel counts).")
flags.DEFINE_float("lam_div", 0.2, "Weight of the greedy diversity term.")
flags.DEFINE_enum("basic_norm", "none", ["none", "minmax"], "Score_basic as the model scores it "
                  "(none, eq. 5 as printed) or min-max scaled to [0, 1] over each user's "
                  "candidates (spec 4: comparable scales).")
flags.DEFINE_enum("mic_score", "softmax", ["softmax", "max"], "Score_MIC: the softmax of the "
                  "counts over the candidates (eq. 3 as printed) or count / largest count.")
flags.DEFINE_enum("index_type", "flat", ["flat", "ivf", "hnsw"], "Faiss index of the datastores.")
flags.DEFINE_enum("optimizer", "auto", ["auto", "adam", "lazy_adam"], "auto (LazyAdam from "
                  "100k items, else Adam), Adam, or Adam on the touched "
                  "embedding rows only (fast on large catalogues).")
flags.DEFINE_boolean("jit_compile", None, "XLA-compile the update (forward, backward, "
                     "optimizer; the random draws stay outside). Default: on below 100k items "
                     "(1.1-1.5x faster on this CPU), off above; see benchmarks/README.md.")
flags.DEFINE_enum("mic_preset", "selected", ["selected", "paper"], "With --plugin=mic: "
                  "`selected` takes every MIC flag not given on the command line from "
                  "configs/mic_DATASET_ENCODER.flags (chosen on validation by "
                  "experiments/select.py; the paper's values when there is none), `paper` "
                  "keeps the paper's printed values (the flag defaults).")
flags.DEFINE_string("configs_dir", str(flagfiles.CONFIGS), "Where --mic_preset=selected looks "
                    "for mic_DATASET_ENCODER.flags.")
flags.DEFINE_enum("eval_mode", None, ["u2i", "cross_channel"], "Ranking of valid (checkpoint "
                  "selection) and test: the model's own U2I score (ComiRec's evaluation; the "
                  "default without MIC) or MIC's cross-channel inference (the default with MIC).")
flags.DEFINE_boolean("evaluate_test", True, "Evaluate the test users at the end. `--noevaluate_test` "
                     "is a selection run: the test split is sealed, metrics.json holds valid only.")
flags.DEFINE_boolean("deterministic", True, "Enable TF op determinism (same seed, same metrics).")
flags.DEFINE_enum("distribute", "none", ["none", "multi_worker"], "`multi_worker`: this process "
                  "is one worker of a data-parallel job (MultiWorkerMirroredStrategy) described "
                  "by the TF_CONFIG environment variable; start local workers with `python -m "
                  "mic_tf.distributed.launch --workers=N -- FLAGS`. Every worker gets the same "
                  "flags; --batch_size is the global batch.")
flags.DEFINE_integer("verbose", None, "Keras progress: 1 bar, 2 one line per period "
                     "(default: 1 on a terminal, else 2).")
FLAGS = flags.FLAGS


def apply_mic_preset() -> tuple[str, dict | None]:
    """Applies the selected MIC settings (spec 3.3: the defaults are the values selected on
    validation); returns what was used and the flagfile's lines (None without one), for
    flags.json: the table runners' reuse check compares the lines with today's file, so a flag
    the file no longer sets (left to run.py's default) is caught as well as a changed value."""
    if FLAGS.plugin != "mic" or FLAGS.mic_preset == "paper":
        return "paper", None
    path = flagfiles.selected_config(FLAGS.dataset, FLAGS.encoder, FLAGS.configs_dir)
    if not path.exists():
        logging.warning("no selected MIC settings in %s: using the paper's printed values "
                        "(run experiments/select.py to choose them on validation)", path)
        return "paper (no selected config)", None
    lines = flagfiles.read_flagfile(path)
    applied = flagfiles.apply_defaults(FLAGS, lines)
    print(f"MIC settings from {path}: {', '.join(applied) or 'none (all given)'}",
          file=sys.stderr)
    return str(path), lines


def resolved(name):
    return defaults.resolve(name, FLAGS.dataset, FLAGS.encoder, getattr(FLAGS, name))


def build_config(ds=None):
    """The run's config from the flags; without `ds`, the values that depend on the data
    (max_steps from --max_epochs, the --jit_compile default) keep placeholders, so that every
    flag can be checked before the data is prepared."""
    from mic_tf.data.pipeline import steps_per_epoch
    from mic_tf.experiment import ExperimentConfig
    from mic_tf.mic.mining import MiningConfig
    from mic_tf.mic.plugin import MICConfig
    from mic_tf.inference.score import InferenceConfig
    from mic_tf.training.trainer import TrainConfig, default_jit_compile

    batch_size = resolved("batch_size")
    max_steps = resolved("max_steps")
    if FLAGS.max_epochs is not None and ds is not None:
        max_steps = FLAGS.max_epochs * steps_per_epoch(ds, FLAGS.sampler, batch_size)
    requested = resolved("jit_compile")  # the flag, else the dataset's default (may be None)
    jit_compile = (default_jit_compile(ds.num_items, requested) if ds is not None
                   else bool(requested))
    if FLAGS.distribute == "multi_worker":
        jit_compile = False  # the step's collectives stay out of XLA (check_flags refuses True)
    verbose = FLAGS.verbose if FLAGS.verbose is not None else (1 if sys.stderr.isatty() else 2)
    train = TrainConfig(batch_size=batch_size, maxlen=resolved("maxlen"),
                        learning_rate=resolved("learning_rate"), max_steps=max_steps,
                        eval_every=min(resolved("eval_every"), max_steps),
                        patience=resolved("patience"),
                        patience_loss_drop=FLAGS.patience_loss_drop, seed=FLAGS.seed,
                        sampler=FLAGS.sampler,
                        jit_compile=jit_compile,
                        exclude_history=FLAGS.exclude_history,
                        optimizer=FLAGS.optimizer,
                        verbose=verbose)
    mining = MiningConfig(num_positives=FLAGS.num_positives,
                          num_hard_negatives=FLAGS.num_hard_negatives, num_cross=FLAGS.num_cross,
                          num_clusters=FLAGS.num_clusters, search_k=FLAGS.mining_search_k,
                          hard_negatives=FLAGS.hard_negatives, seed=FLAGS.seed)
    mic = MICConfig(mic_lambda=FLAGS.mic_lambda, w_uv=FLAGS.w_uv, w_vv=FLAGS.w_vv, w_uu=FLAGS.w_uu,
                    temperature=FLAGS.temperature, dropout=FLAGS.dropout, p_mask=FLAGS.p_mask,
                    mining_every=resolved("mining_every"), mining_start=FLAGS.mining_start,
                    mining_on_plateau=FLAGS.mining_on_plateau, mined_weight=FLAGS.mined_weight,
                    contrastive_start=FLAGS.contrastive_start, ramp_steps=FLAGS.ramp_steps,
                    uu_anchor=FLAGS.uu_anchor, single_channel_heads=FLAGS.single_channel_heads,
                    mining=mining)
    inference = InferenceConfig(k1=FLAGS.k1, m1=FLAGS.m1, m2=FLAGS.m2, m=FLAGS.m_history,
                                m3=FLAGS.m3, lam_mic=FLAGS.lam_mic, lam_div=FLAGS.lam_div,
                                basic_norm=FLAGS.basic_norm, mic_score=FLAGS.mic_score)
    return ExperimentConfig(
        inference=inference, index_type=FLAGS.index_type, mic=mic, encoder=FLAGS.encoder, plugin=FLAGS.plugin, ablation=FLAGS.ablation,
        basic_loss=FLAGS.basic_loss, embedding_dim=resolved("embedding_dim"),
        num_interests=FLAGS.num_interests, routing_iterations=FLAGS.routing_iterations,
        num_sampled=FLAGS.num_sampled, logistic_negatives=FLAGS.logistic_negatives,
        logistic_temperature=FLAGS.logistic_temperature, use_category=FLAGS.use_category,
        use_user_features=FLAGS.use_user_features, evaluate_test=FLAGS.evaluate_test, eval_mode=FLAGS.eval_mode,
        train=train)


def output_dir() -> str:
    return FLAGS.output_dir or os.path.join(
        "runs", FLAGS.dataset, f"{FLAGS.encoder}-{FLAGS.plugin}-s{FLAGS.seed}")


def check_output_dir(out_dir) -> None:
    """The run folder (or the first of its parents that exists) must be a folder."""
    from mic_tf.errors import UsageError

    for path in (Path(out_dir), *Path(out_dir).parents):
        if path.exists():
            if not path.is_dir():
                raise UsageError(f"--output_dir={out_dir} is not allowed: {path} is a file, not a "
                                 f"folder; pass another --output_dir")
            return


def check_flags() -> None:
    """Checks every flag (ranges, finiteness, combinations) before any work: nothing is read,
    prepared or written when a value is refused. Raises UsageError naming the flag."""
    from mic_tf.utils.checks import check_fields, integer

    # The flags of this script that no config object holds (a new one: one more entry).
    run_checks = (integer("max_epochs", 1, optional=True), integer("verbose", 0, 2, optional=True))
    check_fields(FLAGS, run_checks, owner="")
    common_flags.protocol_params(FLAGS).validate()
    build_config().validate()
    check_output_dir(output_dir())
    if FLAGS.distribute == "multi_worker" and FLAGS.jit_compile:
        from mic_tf.distributed.loop import check_distributable
        from mic_tf.training.trainer import TrainConfig
        check_distributable(TrainConfig(jit_compile=True), 1)


def start_distribution():
    """With --distribute=multi_worker: reads TF_CONFIG, checks the flags against the cluster and
    creates the strategy (before TensorFlow runs any op); None otherwise."""
    if FLAGS.distribute != "multi_worker":
        return None
    from mic_tf.distributed.cluster import Distribution, cluster_from_env, make_strategy
    from mic_tf.distributed.loop import check_distributable

    cluster = cluster_from_env()
    check_distributable(build_config().train, cluster.num_workers)
    return Distribution(cluster, make_strategy(cluster))


def chief_first(distributed, on_chief, on_others=None):
    """Runs `on_chief` on the chief (alone: no worker runs before it is done), then every worker
    learns whether it failed (a MicError stops them all with the chief's message), and the other
    workers run `on_others`. Without `distributed`, just `on_chief()`."""
    if distributed is None:
        return on_chief()
    result, error = None, None
    if distributed.is_chief:
        try:
            result = on_chief()
        except MicError as e:
            error = str(e)
    error = distributed.collectives.broadcast_json(error)
    if error is not None:
        raise MicError(error if distributed.is_chief else f"the chief stopped: {error}")
    if not distributed.is_chief and on_others is not None:
        result = on_others()
    return result


def resolved_flags(cfg, out_dir, ds) -> dict:
    """Every flag of this script and of the data flags, with defaults resolved, and the
    fingerprint of the processed data (its content, wherever it lives)."""
    import dataclasses

    values = {}
    for module in (sys.argv[0], common_flags.__name__, "__main__", "experiments.run"):
        for flag in FLAGS.flags_by_module_dict().get(module, []):
            values[flag.name] = flag.value
    values.update({k: v for k, v in dataclasses.asdict(cfg.train).items()})
    values.update({k: v for k, v in dataclasses.asdict(cfg).items()
                   if k not in ("train", "mic", "inference")})
    values.update({f"inference_{k}": v for k, v in dataclasses.asdict(cfg.inference).items()})
    values.update({k: v for k, v in dataclasses.asdict(cfg.mic).items() if k != "mining"})
    values.update({f"mining_{k}": v for k, v in dataclasses.asdict(cfg.mic.mining).items()})
    values["output_dir"] = str(out_dir)
    values["data_fingerprint"] = ds.meta["data_fingerprint"]
    return values


# Paths may change between a run and its resumption (a moved data folder); what they hold may
# not, and `data_fingerprint` (the processed content's checksums) is compared instead. N workers
# with global batch B train as one process with batch B, so a run may resume on other workers.
# mic_preset_values: the flags' own values are compared; runs started before it existed resume
RESUME_IGNORED = (*flagfiles.PLACE_FLAGS, "distribute", "workers", "mic_preset_values")


def check_same_run(out_dir, values) -> None:
    """A run folder with a checkpoint may only be resumed with the flags and the data it was
    started with. Called before anything in the folder is written."""
    old_path = os.path.join(out_dir, "flags.json")
    if not os.path.exists(os.path.join(out_dir, "checkpoints", "state.json")):
        return
    if not os.path.exists(old_path):
        raise MicError(f"{out_dir} holds a checkpoint but no flags.json, so it cannot be checked "
                       f"that it was started with these flags and data; pass another "
                       f"--output_dir")
    with open(old_path) as f:
        old = {**flagfiles.ADDED_FLAGS, **json.load(f)}
    changed = {k: (old.get(k), v) for k, v in json.loads(json.dumps(values)).items()
               if k not in RESUME_IGNORED and old.get(k) != v}
    if changed:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        what = "data" if set(changed) == {"data_fingerprint"} else "flags"
        raise MicError(f"{out_dir} holds a run started with other {what} ({detail}); resume it "
                       f"with the same flags and data (data_fingerprint is the processed data's "
                       f"content), or pass another --output_dir")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint/export INFO lines drown the progress
    from mic_tf.experiment import run_experiment
    from mic_tf.utils.io import atomic_write_json
    from mic_tf.utils.provenance import record_start

    if FLAGS.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    distributed = None
    try:
        preset, preset_lines = apply_mic_preset()  # before the checks, which check its values
        check_flags()
        distributed = start_distribution()
        prepare = lambda: common_flags.prepare_from_flags(FLAGS)  # noqa: E731
        ds = chief_first(distributed, prepare, prepare)  # the others find the chief's cache
        cfg = build_config(ds)
        cfg.validate_for(ds)
        out_dir = output_dir()
        values = resolved_flags(cfg, out_dir, ds)
        values["mic_preset_used"] = preset
        if preset_lines is not None:
            values["mic_preset_values"] = preset_lines
        values["workers"] = 1 if distributed is None else distributed.num_workers

        def write_flags():
            check_same_run(out_dir, values)
            atomic_write_json(os.path.join(out_dir, "flags.json"), values)
            record_start(out_dir)  # the commit and versions of this start (provenance.json)
            return ds.meta["data_fingerprint"]

        fingerprint = chief_first(distributed, write_flags)
        if distributed is not None:
            check_same_data(distributed, fingerprint, ds)
        result = run_experiment(cfg, ds, out_dir, distributed=distributed)
    except MicError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        interrupts.stop(RESUME)
    except Exception as e:  # noqa: BLE001 - a collective failed: a peer died or is unreachable
        if distributed is None or not is_collective_failure(e):
            raise
        sys.exit(f"error: the multi-worker job stopped on {distributed.cluster.name} "
                 f"({type(e).__name__}: {str(e).splitlines()[0][:200]}): another worker died or "
                 f"is unreachable; {RESUME}")
    if distributed is None or distributed.is_chief:
        print(json.dumps({"output_dir": out_dir, **{k: result[k] for k in ("valid", "test")
                                                     if k in result}}))
    if distributed is not None:  # after the chief's outputs (written atomically): leave together
        distributed.leave()


def check_same_data(distributed, fingerprint, ds) -> None:
    """Every worker must train on the chief's processed data (each prepares its own copy)."""
    chief = distributed.collectives.broadcast_json(fingerprint)
    if ds.meta["data_fingerprint"] != chief:
        raise MicError(f"{distributed.cluster.name} prepared other data than the chief "
                       f"(data_fingerprint {ds.meta['data_fingerprint']} vs {chief}); give every "
                       f"worker the same raw files and data flags")


def is_collective_failure(error) -> bool:
    import tensorflow as tf

    return isinstance(error, (tf.errors.UnavailableError, tf.errors.CancelledError,
                              tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                              tf.errors.InternalError))


if __name__ == "__main__":
    app.run(main)
