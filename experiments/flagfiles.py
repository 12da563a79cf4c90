"""Flagfiles of selected settings (`configs/mic_DATASET_ENCODER.flags`): reading and applying."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# Flags that name places or how much is printed, not settings: two runs that differ only in
# them are the same run (run.py's resume check, the table runners' reuse of finished runs).
PLACE_FLAGS = ("verbose", "output_dir", "flagfile", "data_dir", "raw_dir", "raw_path")

# run.py flags added after runs were recorded, with the value such a run had (the flag's
# default, which reproduces the behaviour before the flag): a flags.json without the flag is
# read with it, so an older run resumes (run.py) and is reused (the table runners) with the
# default and is refused for another value
ADDED_FLAGS = {"patience_loss_drop": 0.0}


def parse_flag(arg: str) -> tuple[str, str | bool]:
    """`--name=value` -> (name, "value"); `--name` -> (name, True); `--noname` -> (name, False).

    Without an `=`, a leading `no` is read as negation (absl's boolean syntax), so a non-boolean
    flag must always be written `--name=value`."""
    if not arg.startswith("--"):
        raise ValueError(f"{arg!r} is not of the form --name[=value]")
    name, eq, value = arg[2:].partition("=")
    if eq:
        return name, value
    return (name[2:], False) if name.startswith("no") else (name, True)


def as_bool(value: str | bool) -> bool:
    """A boolean flag's value as `parse_flag` returns it (True, False, or absl's `=true` /
    `=false` / `=1` / `=0` spellings) -> bool; anything else is refused, not read as True."""
    if isinstance(value, bool):
        return value
    spelled = {"true": True, "1": True, "false": False, "0": False}
    if value.lower() not in spelled:
        raise ValueError(f"{value!r} is not a boolean value: write --name, --noname, "
                         "--name=true or --name=false")
    return spelled[value.lower()]


def read_flagfile(path: Path) -> dict:
    """`--name=value` / `--name` / `--noname` lines (`#` comments) -> {name: str or bool}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            name, value = parse_flag(line)
        except ValueError as e:
            raise ValueError(f"{path}: line {e}") from None
        out[name] = value
    return out


def selected_config(dataset: str, encoder: str, configs: Path = CONFIGS) -> Path:
    return Path(configs) / f"mic_{dataset}_{encoder}.flags"


def apply_defaults(flag_values, values: dict) -> list[str]:
    """Sets every flag of `values` that was not given on the command line; returns their names.

    Flags given explicitly always win over the selected settings."""
    applied = []
    for name, value in values.items():
        flag = flag_values[name]
        if flag.present:
            continue
        if isinstance(value, bool):
            flag.value = value
        else:
            flag.parse(value)
            flag.present = 0  # still "not given on the command line"
        applied.append(name)
    return applied
