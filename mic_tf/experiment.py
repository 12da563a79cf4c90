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
from mic_tf.evaluation.baselines import most_popular_vectors
from mic_tf.evaluation.evaluate import evaluate
from mic_tf.evaluation.report import write_metrics, write_recommendations
from mic_tf.inference.evaluator import CrossChannelEvaluator
from mic_tf.inference.score import InferenceConfig
from mic_tf.mic.model import ablation_settings
from mic_tf.mic.plugin import MiningCallback, mic_pipeline_fn
# Moved to models/factory.py (below evaluation/checkpoint.py); imported from here by scripts.
from mic_tf.models.factory import (EVAL_MODES, EXPERIMENT_CHECKS, PLUGINS,  # noqa: F401
                                   ExperimentConfig, build_model)
from mic_tf.models.losses import score_geometry
from mic_tf.training.projector import write_item_projector
from mic_tf.training.trainer import Trainer
from mic_tf.utils.faiss_index import ItemIndex


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


def make_trainer(cfg: ExperimentConfig, ds: ProcessedDataset, out_dir: Path, log,
                 distributed=None):
    """The run's trainer and the model that evaluates and exports: `Trainer` and its model, or
    with `distributed` (a `mic_tf.distributed.cluster.Distribution`) the multi-worker loop and
    its plain evaluation copy of the model."""
    map_fn, callbacks = plugin_parts(cfg, ds, log)
    if distributed is None:
        model = build_model(cfg, ds)
        trainer = Trainer(model, ds, cfg.train, out_dir, log=log, map_fn=map_fn,
                          callbacks=callbacks, evaluator=make_evaluator(cfg, ds))
        for callback in callbacks:
            callback.writer = trainer.writer
        return trainer, model
    from mic_tf.distributed.loop import DistributedTrainer

    trainer = DistributedTrainer(
        lambda: build_model(cfg, ds), ds, cfg.train, out_dir, distributed.strategy,
        distributed.is_chief, log=log, map_fn=map_fn, mining=callbacks[0] if callbacks else None,
        evaluator=make_evaluator(cfg, ds) if distributed.is_chief else None)
    return trainer, trainer.eval_model


def run_experiment(cfg: ExperimentConfig, ds: ProcessedDataset, out_dir: str | Path,
                   log=None, distributed=None) -> dict:
    """Trains (or resumes), evaluates the test users once with the best weights, writes outputs.

    With `cfg.evaluate_test=False` (a selection run) the test split is sealed: only the valid
    metrics are written, and no code path reads a test target. With `distributed` (a
    `mic_tf.distributed.cluster.Distribution`) this process is one worker of a multi-worker job:
    every worker trains, the chief alone evaluates and writes (the others return `{}`)."""
    cfg.validate_for(ds)  # before the run folder is created
    chief = distributed is None or distributed.is_chief
    out_dir = Path(out_dir)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not cfg.evaluate_test:
        ds.seal("test")
    keras.utils.set_random_seed(cfg.train.seed)
    baseline = {}
    if chief:
        out_dir.mkdir(parents=True, exist_ok=True)
        baseline = most_popular(ds, cfg.train.maxlen, cfg.train.top_n,
                                ("valid", "test") if cfg.evaluate_test else ("valid",))
        log("MostPopular: " + ", ".join(f"{split} recall@50 {m['recall@50']:.4f}"
                                        for split, m in baseline.items()))
    trainer, model = make_trainer(cfg, ds, out_dir, log, distributed)
    start = time.time()
    state = trainer.fit()
    train_seconds = time.time() - start
    if not chief:
        return {}
    info = {"encoder": cfg.encoder, "plugin": cfg.plugin, "ablation": cfg.ablation,
            "basic_loss": cfg.basic_loss, "jit_compile": cfg.train.jit_compile,
            "optimizer": trainer.optimizer_name,
            "steps": state.evals_done * cfg.train.eval_every,
            "best_step": (state.best_eval + 1) * cfg.train.eval_every,
            "train_seconds_this_process": round(train_seconds, 1),
            "evaluate_test": cfg.evaluate_test, "eval_mode": cfg.resolved_eval_mode(),
            "workers": 1 if distributed is None else distributed.num_workers}
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
