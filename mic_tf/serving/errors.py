"""Serving errors. Each is one of the project's error classes (`mic_tf.errors`), so the CLI prints
them as `error: ...` and the HTTP layer maps them to 4xx answers that say what to change."""

from __future__ import annotations

from mic_tf.errors import ConfigError, DataError, MicError


class BundleError(DataError):
    """A bundle folder is missing, incomplete, of another format, or not a bundle at all."""


class UnknownIdsError(MicError):
    """Raw item ids that are not in the bundle's catalogue (HTTP 422 names them)."""

    def __init__(self, kind: str, ids):
        self.kind, self.ids = kind, list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:20])
        more = f" and {len(self.ids) - 20} more" if len(self.ids) > 20 else ""
        super().__init__(f"unknown {kind} ids: {shown}{more}")


class StoreUnavailable(MicError):
    """Redis is down, too slow (a time-out), or does not hold the bundle's version."""


class ServingConfigError(ConfigError):
    """An unsafe or impossible serving setting (e.g. a public host without an API key)."""
