"""Error types for problems a user can fix (bad input, bad config).

The CLI prints these as one line and exits non-zero; anything else is a bug and
shows a traceback. They live in `etl` because it is the lowest layer: `models`,
`evaluation` and `pipeline` may all import it.
"""


class ClinfuseError(Exception):
    """Base class for user-facing errors (printed without a traceback)."""


class InputError(ClinfuseError):
    """An input file or folder is missing, malformed or inconsistent.

    The message names the file, the row or column, and what was expected.
    """


class ConfigError(ClinfuseError):
    """A configuration file has an unknown, missing or mistyped key."""


def not_utf8(path, exc: UnicodeDecodeError, source: str) -> InputError:
    """The one-line error for a text file with bytes that are not UTF-8 (`source` exports are UTF-8)."""
    where = " of the decompressed file" if str(path).endswith(".gz") else ""
    return InputError(f"{path}: not UTF-8 text (byte {exc.start}{where}: {exc.object[exc.start:exc.start + 1]!r}); "
                      f"{source} exports are UTF-8")
