"""Per-dataset and per-encoder defaults, in one place (spec 6). Flags left unset take these.

ComiRec used maxlen 20 / batch 128 on Book and maxlen 50 / batch 256 on Taobao; the MIC paper
used batch 1024 and embedding 128 on a P40. On ml-100k there are only 754 training users, so a
batch is at most that many distinct users; the values below keep a default run to minutes on a
2-core CPU. ml-1m follows the paper's section 3.2 (embedding 128, lr 1e-3, dropout 0.2) except
the batch (256, not 1024: BUILD_NOTES "Defaults of ml-1m" has the validation runs behind each
value). Every resolved value is written to the run's flags.json.
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
    # patience 10 and a 10k cap for both arms: no arm may stop at the cap while improving, and
    # patience 5 stopped noisy MIC runs at step 600 (issue 14)
    "ml-100k": {"maxlen": 20, "batch_size": 256, "max_steps": 10000, "eval_every": 100,
                "patience": 10, "mining_every": 100},
    "ml-1m": {"maxlen": 20, "batch_size": 256, "embedding_dim": 128, "max_steps": 40000,
              "eval_every": 200, "patience": 10, "mining_every": 500,
              # D 128: XLA's update was slower for GRU4Rec, ComiRec-SA and -DR (BUILD_NOTES)
              "jit_compile": False},
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
