"""One training + evaluation run (the library side of `experiments/run.py`).

    ds = prepare_dataset("ml-100k")
    result = run_experiment(ExperimentConfig(encoder="gru4rec"), ds, "runs/demo")

writes under the run folder (spec 8): metrics.json, recommendations.jsonl, tensorboard/,
checkpoints/ and, at the end, user_tower/ (a SavedModel) and model.keras.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mic_tf.data.dataset import ProcessedDataset
from mic_tf.data.pipeline import check_sampler
from mic_tf.errors import UsageError
from mic_tf.evaluation.baselines import most_popular_vectors
from mic_tf.evaluation.evaluate import evaluate
from mic_tf.evaluation.report import write_metrics, write_recommendations
from mic_tf.evaluation.retrieval import ItemIndex
from mic_tf.inference.evaluator import CrossChannelEvaluator
from mic_tf.inference.datastore import INDEX_TYPES
from mic_tf.inference.score import InferenceConfig
from mic_tf.mic.model import ABLATIONS, MICModel, ablation_settings
from mic_tf.mic.plugin import MICConfig, MiningCallback, mic_pipeline_fn
from mic_tf.models.encoders import ENCODERS
from mic_tf.models.losses import BASIC_LOSSES, score_geometry
from mic_tf.models.retrieval_model import RetrievalModel
from mic_tf.training.projector import write_item_projector
from mic_tf.training.trainer import TrainConfig, Trainer
from mic_tf.utils.checks import boolean, check_fields, choice, integer, number

PLUGINS = ("none", "mic")
EVAL_MODES = ("u2i", "cross_channel")


@dataclasses.dataclass
class ExperimentConfig:
    """Everything a run depends on besides the data. `experiments/run.py` fills it from flags."""

    encoder: str = "gru4rec"
    plugin: str = "none"
    ablation: str = "full"
    basic_loss: str = "sampled_softmax"
    embedding_dim: int = 64
    num_interests: int = 4
    routing_iterations: int = 3
    num_sampled: int | None = None  # None: 10 x batch_size (ComiRec)
    logistic_negatives: int = 10
    logistic_temperature: float = 0.1
    use_category: bool = False
    use_user_features: bool = False
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mic: MICConfig = dataclasses.field(default_factory=MICConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    index_type: str = "flat"
    evaluate_test: bool = True  # False: a selection run (valid only; the test split is sealed)
    # How valid (checkpoint selection, early stopping) and test rank: "u2i" (the model's own
    # score over the catalogue: ComiRec's evaluation) or "cross_channel" (MIC's inference,
    # spec 4). None: "u2i" for the baseline, "cross_channel" for MIC.
    eval_mode: str | None = None

    def resolved_eval_mode(self) -> str:
        if self.eval_mode is not None:
            return self.eval_mode
        return "cross_channel" if self.plugin == "mic" else "u2i"

    def validate(self) -> None:
        """Every field of this config and of its parts, and the combinations that cannot work.

        Raises UsageError naming the flag and the allowed range. Needs no data: run.py calls it
        before any work (see `validate_for` for the checks that need the dataset).
        """
        check_fields(self, EXPERIMENT_CHECKS)
        self.train.validate()
        self.mic.validate()
        self.inference.validate()
        if self.plugin == "none" and self.ablation != "full":
            raise UsageError(f"--ablation={self.ablation} needs --plugin=mic; the baseline has "
                             f"no MIC component to ablate")
        if self.plugin == "mic" and self.train.sampler == "all":
            raise UsageError("--plugin=mic needs --sampler=comirec: the `all` sampler can put a "
                             "user twice in a batch, which breaks the in-batch contrastive "
                             "negatives")

    def validate_for(self, ds: ProcessedDataset) -> None:
        """The checks that need the data (run.py: after prepare, before anything is written)."""
        self.validate()
        t = self.train
        check_sampler(ds, t.sampler, t.batch_size, t.maxlen)
        if self.plugin == "mic":
            n = min(len(ds.split_range("train")), ds.num_items)
            if self.mic.mining.num_clusters > n:
                raise UsageError(f"--num_clusters={self.mic.mining.num_clusters} is not allowed: "
                                 f"expected at most {n} (the training users and the items of "
                                 f"{ds.name} are clustered)")


# The allowed value of every ExperimentConfig field (a new field: one more line); the parts
# (train, mic, inference) have their own tables.
EXPERIMENT_CHECKS = (
    choice("encoder", sorted(ENCODERS)), choice("plugin", PLUGINS),
    choice("ablation", list(ABLATIONS)), choice("basic_loss", BASIC_LOSSES),
    integer("embedding_dim", 1), integer("num_interests", 1), integer("routing_iterations", 1),
    integer("num_sampled", 1, optional=True), integer("logistic_negatives", 1),
    number("logistic_temperature", 0, low_open=True), boolean("use_category"),
    boolean("use_user_features"), choice("index_type", INDEX_TYPES), boolean("evaluate_test"),
    choice("eval_mode", EVAL_MODES, optional=True),
)


def build_model(cfg: ExperimentConfig, ds: ProcessedDataset) -> RetrievalModel:
    vocab = [len(v) for v in ds.user_feature_vocab] if cfg.use_user_features else []
    options = {}
    if cfg.encoder in ("comirec_sa", "comirec_dr"):
        options["num_interests"] = cfg.num_interests
    if cfg.encoder == "comirec_dr":
        options["routing_iterations"] = cfg.routing_iterations
    common = dict(num_categories=ds.num_categories, user_field_vocab_sizes=vocab,
                  use_category=cfg.use_category, encoder_options=options,
                  basic_loss=cfg.basic_loss,
                  num_sampled=cfg.num_sampled or 10 * cfg.train.batch_size,
                  logistic_negatives=cfg.logistic_negatives,
                  logistic_temperature=cfg.logistic_temperature, seed=cfg.train.seed)
    args = (cfg.encoder, ds.num_items, cfg.embedding_dim, cfg.train.maxlen)
    if cfg.plugin == "mic":
        m = cfg.mic
        model = MICModel(*args, num_train_users=len(ds.split_range("train")),
                         ablation=cfg.ablation, mic_lambda=m.mic_lambda, w_uv=m.w_uv,
                         w_vv=m.w_vv, w_uu=m.w_uu, temperature=m.temperature, dropout=m.dropout,
                         num_positives=m.mining.num_positives,
                         num_hard_negatives=m.mining.num_hard_negatives,
                         num_cross=m.mining.num_cross, mined_weight=m.mined_weight,
                         contrastive_start=m.contrastive_start, ramp_steps=m.ramp_steps,
                         uu_anchor=m.uu_anchor, single_channel_heads=m.single_channel_heads,
                         **common)
    else:
        model = RetrievalModel(*args, **common)
    model.set_item_category(ds.item_category)
    return model


def plugin_parts(cfg: ExperimentConfig, ds: ProcessedDataset, log):
    """The pipeline view function and the callbacks a plugin adds (none for the baseline)."""
    if cfg.plugin != "mic":
        return None, []
    switches = ablation_settings(cfg.ablation)
    m = cfg.mic
    m.mining.seed = cfg.train.seed
    map_fn = mic_pipeline_fn(m, switches["perturbation"], cfg.train.seed, cfg.use_category)
    callbacks = ([MiningCallback(ds, cfg.train.maxlen, m.mining_every, m.mining, log=log,
                                 start=m.mining_start, on_plateau=m.mining_on_plateau)]
                 if switches["mining"] else [])
    return map_fn, callbacks


def make_evaluator(cfg: ExperimentConfig, ds: ProcessedDataset):
    """`cross_channel`: MIC's inference (spec 4, MIC's default); `u2i`: None, the trainer's
    default (ComiRec's evaluation, the baseline's default)."""
    if cfg.resolved_eval_mode() == "u2i":
        return None
    inference = dataclasses.replace(cfg.inference, top_n=cfg.train.top_n)
    if cfg.ablation in ("-u2u", "-u2i", "-i2i"):
        inference = InferenceConfig.for_ablation(cfg.ablation, **dataclasses.asdict(inference))
    return CrossChannelEvaluator(ds, cfg.train.maxlen, inference, index_type=cfg.index_type,
                                 item_score=score_geometry(cfg.basic_loss))


def most_popular(ds: ProcessedDataset, maxlen: int, top_n: int = 50,
                 splits=("valid", "test")) -> dict:
    """MostPopular (training popularity) through the same Faiss + metrics path."""
    user_vector, item_vectors = most_popular_vectors(ds.item_popularity("train"))
    index = ItemIndex(item_vectors)
    out = {}
    for split in splits:
        es = ds.eval_split(split, maxlen)
        out[split], _ = evaluate(user_vector(len(es)), index, es, ds.item_category, top_n=top_n)
    return out


def run_experiment(cfg: ExperimentConfig, ds: ProcessedDataset, out_dir: str | Path,
                   log=None) -> dict:
    """Trains (or resumes), evaluates the test users once with the best weights, writes outputs.

    With `cfg.evaluate_test=False` (a selection run) the test split is sealed: only the valid
    metrics are written, and no code path reads a test target."""
    cfg.validate_for(ds)  # before the run folder is created
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not cfg.evaluate_test:
        ds.seal("test")
    keras.utils.set_random_seed(cfg.train.seed)
    baseline = most_popular(ds, cfg.train.maxlen, cfg.train.top_n,
                            ("valid", "test") if cfg.evaluate_test else ("valid",))
    log("MostPopular: " + ", ".join(f"{split} recall@50 {m['recall@50']:.4f}"
                                    for split, m in baseline.items()))
    model = build_model(cfg, ds)
    map_fn, callbacks = plugin_parts(cfg, ds, log)
    trainer = Trainer(model, ds, cfg.train, out_dir, log=log, map_fn=map_fn, callbacks=callbacks,
                      evaluator=make_evaluator(cfg, ds))
    for callback in callbacks:
        callback.writer = trainer.writer
    start = time.time()
    state = trainer.fit()
    train_seconds = time.time() - start
    info = {"encoder": cfg.encoder, "plugin": cfg.plugin, "ablation": cfg.ablation,
            "basic_loss": cfg.basic_loss, "jit_compile": cfg.train.jit_compile,
            "optimizer": trainer.optimizer_name,
            "steps": state.evals_done * cfg.train.eval_every,
            "best_step": (state.best_eval + 1) * cfg.train.eval_every,
            "train_seconds_this_process": round(train_seconds, 1),
            "evaluate_test": cfg.evaluate_test, "eval_mode": cfg.resolved_eval_mode()}
    # The spec's fairness rule: no arm may stop at its step cap while valid recall still rises.
    info["stopped_at_cap_while_improving"] = (state.best_eval + 1 == state.evals_done
                                              and info["steps"] >= cfg.train.max_steps)
    if info["stopped_at_cap_while_improving"]:
        log(f"warning: the best validation was the last one, at the step cap "
            f"({cfg.train.max_steps}): raise --max_steps, the run had not converged")
    if not cfg.evaluate_test:
        write_metrics(out_dir / "metrics.json", {"valid": state.best_valid},
                      extra={"most_popular": baseline, "run": info})
        return {"valid": state.best_valid, "most_popular": baseline, "run": info}
    test_metrics, ranked = trainer.evaluate_best("test")
    log(f"test (best valid step {(state.best_eval + 1) * cfg.train.eval_every}): recall@50 "
        f"{test_metrics['recall@50']:.4f} ndcg@50 {test_metrics['ndcg@50']:.4f} hit_rate@50 "
        f"{test_metrics['hit_rate@50']:.4f}")
    write_recommendations(out_dir / "recommendations.jsonl", ds.user_raw_ids[trainer.test.users],
                          ranked, ds.item_raw_ids)
    write_item_projector(out_dir / "tensorboard", keras.ops.convert_to_numpy(model.item_table()),
                         ds)
    write_metrics(out_dir / "metrics.json", {"valid": state.best_valid, "test": test_metrics},
                  extra={"most_popular": baseline, "run": info})
    model.export_user_tower(str(out_dir / "user_tower"))
    return {"valid": state.best_valid, "test": test_metrics, "most_popular": baseline,
            "run": info}
