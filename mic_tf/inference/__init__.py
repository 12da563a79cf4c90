"""Cross-channel inference (paper 2.2, 2.8, 2.9; spec 4): datastores, U2I / U2U / I2I channels and
MIC's final score with the greedy diversity pick."""

from mic_tf.inference.datastore import INDEX_TYPES, Datastore, l2_normalize, reduce_users
from mic_tf.inference.score import (CHANNELS, CrossChannelInference, InferenceConfig,
                                    InferenceResult, recommend)

__all__ = ["CHANNELS", "INDEX_TYPES", "CrossChannelInference", "Datastore", "InferenceConfig",
           "InferenceResult", "l2_normalize", "recommend", "reduce_users"]
