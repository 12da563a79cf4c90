"""Per-dataset and per-encoder defaults, in one place (spec 6). Flags left unset take these.

ComiRec used maxlen 20 / batch 128 on Book and maxlen 50 / batch 256 on Taobao; the MIC paper
used batch 1024 and embedding 128 on a P40. On ml-100k there are only 754 training users, so a
batch is at most that many distinct users; the values below keep a default run to minutes on a
2-core CPU. Every resolved value is written to the run's flags.json.
"""

GLOBAL = {
    "maxlen": 20,
    "batch_size": 256,
    "embedding_dim": 64,
    "learning_rate": 1e-3,
    "max_steps": 100000,
    "eval_every": 1000,
    "patience": 10,
    "mining_every": 500,
}

DATASETS = {
    "ml-100k": {"maxlen": 20, "batch_size": 256, "max_steps": 3000, "eval_every": 100,
                "patience": 5, "mining_every": 100},
    "ml-1m": {"maxlen": 50, "batch_size": 256, "max_steps": 20000, "eval_every": 200,
              "patience": 10},
    "book": {"maxlen": 20, "batch_size": 128, "max_steps": 1000000, "eval_every": 1000,
             "patience": 50},
    "taobao": {"maxlen": 50, "batch_size": 256, "max_steps": 1000000, "eval_every": 500,
               "patience": 50},
    "steam": {"maxlen": 20, "batch_size": 256, "max_steps": 200000, "eval_every": 1000,
              "patience": 20},
    "synthetic": {"maxlen": 20, "batch_size": 256, "max_steps": 5000, "eval_every": 250,
                  "patience": 5},
    "custom": {},
}

ENCODERS = {
    # ComiRec's README: "use --learning_rate 0.005 for ComiRec-DR".
    "comirec_dr": {"learning_rate": 5e-3},
}


def resolve(name: str, dataset: str, encoder: str, value):
    """The flag value if set, else the encoder's, the dataset's, then the global default."""
    if value is not None:
        return value
    for table in (ENCODERS.get(encoder, {}), DATASETS.get(dataset, {}), GLOBAL):
        if name in table:
            return table[name]
    return None
