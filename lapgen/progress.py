"""Progress bars and console output.

All progress goes to stderr (so `--json` output on stdout stays clean) through rich. `set_quiet(True)`
(the CLI's `--quiet`) silences bars and notices; errors are never silenced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

PIPE_WIDTH = 1000  # columns of a console whose stream is a file or a pipe (COLUMNS unset)


class _Console(Console):
    """A rich Console that, writing to a file or a pipe, lays tables out as wide as their content instead of
    the 80 columns (or the width of whichever other stream is a terminal) rich assumes, so `lapgen models
    list | grep` or `> table.txt` never shows a cut cell such as 'clip_f…'. On a terminal, or with COLUMNS
    set, nothing changes."""

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in os.environ:
            return ConsoleDimensions(PIPE_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


# soft_wrap: a printed line is never hard-wrapped at the console width, so paths, commands and error lines
# stay whole for the terminal, log files and scripts alike; tables still fit a terminal.
stderr = _Console(stderr=True, soft_wrap=True)
stdout = _Console(soft_wrap=True)
_quiet = False


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = bool(value)


def is_quiet() -> bool:
    return _quiet


_held: list[str] | None = None  # None: notices print at once; a list: held ones wait (see hold_notices)


def hold_notices(on: bool = True) -> None:
    """While on, `notice(..., hold=True)` lines wait until the next output (another notice, a warning, a
    progress bar) or `flush_notices()`, and `drop_notices()` discards them. The CLI holds them for the length
    of a command, so a command that fails before printing anything prints only its one error line."""
    global _held
    _held = [] if on else None


def flush_notices() -> None:
    """Print the held notices now (holding stays as it is)."""
    if _held:
        lines, _held[:] = list(_held), []
        for line in lines:
            stderr.print(line, highlight=False)


def drop_notices() -> None:
    """Forget the held notices (a command that failed)."""
    if _held:
        _held.clear()


def notice(message: str, *, hold: bool = False) -> None:
    """A one-line notice on stderr (silenced by --quiet); `hold`: may wait for the command's next output."""
    if _quiet:
        return
    if hold and _held is not None:
        _held.append(message)
        return
    flush_notices()
    stderr.print(message, highlight=False)


def warn(message: str) -> None:
    """A warning on stderr (always shown)."""
    flush_notices()
    stderr.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


class _Progress(Progress):
    """A rich Progress that clears its bar instead of leaving it behind when the work inside it fails (or
    is abandoned), so a failed command's only output is its one error line."""

    def abort(self) -> None:
        """Stop without leaving the bar on the console."""
        self.live.transient = True
        self.stop()

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            super().__exit__(exc_type, exc_val, exc_tb)


def make_progress(*, rate_unit: str | None = None) -> Progress:
    """A rich Progress on stderr with count, rate and ETA; disabled when quiet."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if rate_unit:
        columns.append(TextColumn("{task.fields[rate]}"))
    flush_notices()
    return _Progress(*columns, console=stderr, disable=_quiet, transient=False)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (stderr; silent when quiet)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
