"""Encoders selected by name (spec 3.1). Adding one: a module with a UserTower subclass + one line."""

from mic_tf.errors import ConfigError
from mic_tf.models.encoders.comirec_dr import ComiRecDR
from mic_tf.models.encoders.comirec_sa import ComiRecSA
from mic_tf.models.encoders.gru4rec import GRU4Rec
from mic_tf.models.encoders.youtube_dnn import YouTubeDNN

ENCODERS = {
    "youtube_dnn": YouTubeDNN,
    "gru4rec": GRU4Rec,
    "comirec_dr": ComiRecDR,
    "comirec_sa": ComiRecSA,
}


def get_encoder(name: str):
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name]
