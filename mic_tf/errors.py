"""Errors raised at the boundary: each message names the problem and what to change."""


class MicError(ValueError):
    """Base class of every user-facing error in mic-tf."""


class DataError(MicError):
    """A raw or processed data file is missing, truncated, malformed or empty after filtering.

    The message names the file and, where there is one, the line, and says what was expected.
    """

    def __init__(self, message: str, path=None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(MicError):
    """A flag or config value is invalid or an impossible combination."""


class UsageError(ConfigError):
    """A flag (or the config field it sets), or an argument of the Python API, is outside its
    allowed values, or flags combine in a way that cannot work. The message names the flag (or
    argument), the value and what is allowed."""
