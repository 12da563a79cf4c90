"""The run configuration and the model it builds (`ExperimentConfig`, `build_model`): what both a
training run (`mic_tf.experiment`) and a reloaded run (`evaluation/checkpoint.py`, serving's
export) need, below both (moved from `mic_tf/experiment.py`). MIC models are built here too, so
this module imports `mic_tf.mic`."""

from __future__ import annotations

import dataclasses

from mic_tf.data.dataset import ProcessedDataset
from mic_tf.data.pipeline import check_sampler
from mic_tf.errors import UsageError
from mic_tf.inference.datastore import INDEX_TYPES
from mic_tf.inference.score import InferenceConfig
from mic_tf.mic.model import ABLATIONS, MICModel
from mic_tf.mic.plugin import MICConfig
from mic_tf.models.encoders import ENCODERS
from mic_tf.models.losses import BASIC_LOSSES
from mic_tf.models.retrieval_model import RetrievalModel
from mic_tf.training.trainer import TrainConfig
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
