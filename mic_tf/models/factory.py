"""The run configuration and the model it builds (`ExperimentConfig`, `build_model`): what both a
training run (`mic_tf.experiment`) and a reloaded run (`evaluation/checkpoint.py`, serving's
export) need, below both (moved from `mic_tf/experiment.py`). MIC models are built here too, so
this module imports `mic_tf.mic`."""

from __future__ import annotations

import dataclasses

from mic_tf.data.dataset import ProcessedDataset
from mic_tf.errors import ConfigError
from mic_tf.inference.score import InferenceConfig
from mic_tf.mic.model import ABLATIONS, MICModel
from mic_tf.mic.plugin import MICConfig
from mic_tf.models.encoders import ENCODERS
from mic_tf.models.retrieval_model import RetrievalModel
from mic_tf.training.trainer import TrainConfig

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
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}; choose one of {sorted(ENCODERS)}")
        if self.plugin not in PLUGINS:
            raise ConfigError(f"unknown plugin {self.plugin!r}; choose one of {PLUGINS}")
        if self.ablation not in ABLATIONS:
            raise ConfigError(f"unknown ablation {self.ablation!r}; choose one of "
                              f"{list(ABLATIONS)}")
        if self.eval_mode not in (None, *EVAL_MODES):
            raise ConfigError(f"unknown eval_mode {self.eval_mode!r}; choose one of {EVAL_MODES}")
        if self.plugin == "none" and self.ablation != "full":
            raise ConfigError(f"--ablation={self.ablation} needs --plugin=mic; the baseline has "
                              f"no MIC component to ablate")
        for name in ("embedding_dim", "num_interests", "routing_iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        t = self.train
        for name in ("batch_size", "maxlen", "max_steps", "eval_every", "patience"):
            if getattr(t, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(t, name)}")
        if t.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {t.learning_rate}")
        m = self.mic
        for name in ("mic_lambda", "dropout", "p_mask"):
            if not 0 <= getattr(m, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(m, name)}")
        if m.temperature <= 0 or m.mining_every < 1:
            raise ConfigError(f"temperature must be > 0 and mining_every >= 1, got "
                              f"{m.temperature} and {m.mining_every}")
        if self.plugin == "mic" and t.sampler == "all":
            raise ConfigError("--plugin=mic needs --sampler=comirec: the `all` sampler can put a "
                              "user twice in a batch, which breaks the in-batch contrastive "
                              "negatives")


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
