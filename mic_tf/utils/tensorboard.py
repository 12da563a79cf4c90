"""Reading back the scalars a run wrote to TensorBoard (for reports, not for training)."""

from __future__ import annotations

from pathlib import Path


def read_scalars(log_dir, prefix: str = "") -> dict[str, dict[int, float]]:
    """`{tag: {step: value}}` of every scalar under `log_dir` whose tag starts with `prefix`.

    Reads every `events.out.tfevents.*` file below `log_dir` in name order (a resumed run
    appends a new file), so a step written twice keeps its last value. Raises FileNotFoundError
    naming the folder when it holds no event file."""
    import tensorflow as tf

    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event file under {log_dir}")
    out: dict[str, dict[int, float]] = {}
    for path in files:
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if not value.tag.startswith(prefix):
                    continue
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                else:  # TF1-style simple_value
                    number = float(value.simple_value)
                out.setdefault(value.tag, {})[int(event.step)] = number
    return out
