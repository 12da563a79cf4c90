"""The tiny model of the distributed tests: one config for the worker script and the test."""

from mic_tf.models.factory import ExperimentConfig
from mic_tf.training.trainer import TrainConfig
from tests.toy_data import toy_dataset

BATCH = 16  # the global batch: 8 users per worker with 2 workers


def toy_setup(encoder: str, plugin: str = "none", basic_loss: str = "sampled_softmax"):
    """(dataset, config): 80 users (64 training), 40 items, D 8, L 5; with MIC, mining at step 5
    and then every 5 steps (3 clusters), so that 20 steps cover four minings."""
    ds = toy_dataset(num_users=80, num_items=40)
    cfg = ExperimentConfig(encoder=encoder, plugin=plugin, basic_loss=basic_loss, embedding_dim=8,
                           use_category=True,
                           train=TrainConfig(batch_size=BATCH, maxlen=5, seed=3,
                                             optimizer="adam", jit_compile=False))
    cfg.mic.mining_every = 5
    cfg.mic.mining_start = 5
    cfg.mic.mining.num_clusters = 3
    cfg.mic.mining.seed = cfg.train.seed
    return ds, cfg
