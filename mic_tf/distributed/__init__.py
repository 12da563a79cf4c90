"""Data-parallel training across workers (spec 10): `TF_CONFIG` and the strategy (`cluster`), the
multi-worker loop over the model's own train step (`loop`), and a local launcher (`launch`)."""
