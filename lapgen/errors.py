"""User-facing errors.

A `LapgenError` is a problem the user can fix (bad input, missing file, unknown name). The CLI prints its
message as one line on stderr and exits with code 2; anything else is a bug and keeps its traceback.
Messages say what is wrong, which file, and what to do.
"""

from __future__ import annotations

from pathlib import Path


def _strip_period(text: str) -> str:
    """Drop a closing full stop (parts are joined with '; '), but keep an ellipsis such as 'a, b, ...'."""
    return text if text.endswith("...") else text.rstrip(".")


class LapgenError(Exception):
    """An error caused by the user's input or environment, reported as one line (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.path = None if path is None else Path(path)
        self.hint = hint
        parts = [_strip_period(message)]
        if path is not None and str(path) not in message:
            parts[0] = f"{path}: {parts[0]}"
        if hint:
            parts.append(_strip_period(hint))
        super().__init__("; ".join(parts))

    def one_line(self) -> str:
        """The message collapsed onto one line."""
        return " ".join(str(self).split())
