"""Range checks of config fields, declared as small tables (one line per field).

A config object lists its fields as `Check`s and calls `check_fields(self, TABLE)` in its
`validate()`; adding a field (and its flag) is adding one line to the table. A failing check
raises `UsageError` naming the flag, the value and the allowed range, e.g.

    --dropout=1.0 is not allowed: expected a finite number in [0, 1) (MICConfig.dropout)

Values must already have their final type: integers are Python / numpy integers (not bools, not
floats), numbers are finite ints or floats (not bools, not strings).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from mic_tf.errors import UsageError

INT32_MAX = 2 ** 31 - 1


@dataclasses.dataclass(frozen=True)
class Check:
    """One field's allowed values.

    Attributes:
      field: the attribute name on the config object.
      kind: "int", "number" (finite real), "bool" or "choice".
      low, high: bounds (None = unbounded); `low_open` / `high_open` exclude them.
      optional: None is allowed (meaning "use the default").
      choices: the allowed values of a "choice".
      flag: the command-line flag that sets it, when its name differs from `field`.
    """

    field: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    choices: tuple = ()
    flag: str | None = None

    def allowed(self) -> str:
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            text = "an integer" if self.kind == "int" else "a finite number"
            text += self._range()
        return text + (", or unset" if self.optional else "")

    def _range(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return (f" in {'(' if self.low_open else '['}{lo:g}, {hi:g}"
                    f"{')' if self.high_open else ']'}")
        if lo is not None:
            return f" {'>' if self.low_open else '>='} {lo:g}"
        if hi is not None:
            return f" {'<' if self.high_open else '<='} {hi:g}"
        return ""

    def ok(self, value) -> bool:
        if value is None:
            return self.optional
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind == "int" and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        lo, hi = self.low, self.high
        if lo is not None and (value < lo or (self.low_open and value == lo)):
            return False
        return not (hi is not None and (value > hi or (self.high_open and value == hi)))


def integer(field, low=None, high=None, *, optional=False, flag=None) -> Check:
    return Check(field, "int", low, high, optional=optional, flag=flag)


def number(field, low=None, high=None, *, low_open=False, high_open=False, optional=False,
           flag=None) -> Check:
    return Check(field, "number", low, high, low_open, high_open, optional, flag=flag)


def boolean(field, *, flag=None) -> Check:
    return Check(field, "bool", flag=flag)


def choice(field, choices, *, optional=False, flag=None) -> Check:
    return Check(field, "choice", optional=optional, choices=tuple(choices), flag=flag)


def check_value(check: Check, value, owner: str = "") -> None:
    """Raises UsageError when `value` is not allowed by `check`."""
    if check.ok(value):
        return
    where = f" ({owner}.{check.field})" if owner else ""
    raise UsageError(f"--{check.flag or check.field}={value!r} is not allowed: expected "
                     f"{check.allowed()}{where}")


def check_fields(obj, checks, owner: str | None = None) -> None:
    """Applies every check of the table `checks` to the attributes of `obj`."""
    owner = type(obj).__name__ if owner is None else owner
    for check in checks:
        check_value(check, getattr(obj, check.field), owner)
