"""The stopping rule's one step, shared by the training loop and `experiments/replay_stopping.py`."""

from __future__ import annotations


def arm_patience(reference: float, fell_at: int, loss: float | None, drop: float,
                 step: int) -> tuple[float, int]:
    """(loss_reference, loss_fell_at) after the period ending at `step` (`patience_loss_drop`).

    The first period's basic loss is the reference (-1: not yet); `fell_at` is the step from
    which validations without gain count toward patience (-1: not yet), the first whose loss is
    at most (1 - drop) x the reference. With drop 0 patience always counts (ComiRec's rule)."""
    if drop <= 0 or fell_at >= 0:
        return reference, fell_at
    if loss is None:
        raise ValueError("patience_loss_drop needs each period's basic_loss")
    if reference < 0:
        return float(loss), -1
    return reference, (step if float(loss) <= (1.0 - drop) * reference else -1)


def patience_counts(fell_at: int, drop: float) -> bool:
    return drop <= 0 or fell_at >= 0
