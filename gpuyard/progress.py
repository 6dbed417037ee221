"""Progress of a long CLI step on stderr: a rich progress bar when stderr is a
terminal, otherwise a few plain lines ("what: 2,000/7,500"), so that stdout stays
what the command prints (JSON, a banner) and logs stay readable."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO


class Steps:
    """`with Steps("registering nodes", 7500) as p: ... p.advance()`. `plain_every`:
    seconds between plain lines (the last step always prints one); `plain=False`: no
    plain lines at all (a step too short to be worth them)."""

    def __init__(
        self,
        what: str,
        total: int,
        stream: TextIO | None = None,
        plain: bool = True,
        plain_every: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.what, self.total = what, max(0, total)
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.enabled = enabled and self.total > 0
        self.tty = self.enabled and _isatty(self.stream)
        self.plain = self.enabled and plain and not self.tty
        self.plain_every = plain_every
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Steps:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total)
        self._last_line = time.monotonic()
        return self

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + n)
        if self._bar is not None:
            desc = f"{self.what} {note}" if note else self.what
            self._bar.update(self._task, completed=self.done, description=desc)
        elif self.plain:
            now = time.monotonic()
            if self.done == self.total or now - self._last_line >= self.plain_every:
                self._last_line = now
                tail = f" ({note})" if note else ""
                print(
                    f"{self.what}: {self.done:,}/{self.total:,}{tail}", file=self.stream, flush=True
                )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
