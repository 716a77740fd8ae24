"""Quiet, readable output: the one place that decides how progress bars are drawn, and dependency warnings
shown once per process instead of once per model.

Every featdiff bar is made by ``progress_bar``. In a terminal (stderr is a TTY) or a notebook it is the
usual tqdm bar (``tqdm.auto``). Anywhere else (stderr redirected to a log file or a pipe) it writes whole
lines, not carriage-return redraws: one when it starts, one each time another tenth of the work is done (or
every ``LOG_INTERVAL`` seconds when the total is unknown), and a final one: at most a dozen lines a bar.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm as _std_tqdm

LOG_INTERVAL = 60.0
"""Seconds between two lines of a log-mode bar whose total is unknown."""

_SHOWN: set[tuple[type, str]] = set()  # dependency warnings already shown in this process


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (tqdm.autonotebook's test)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # an IPython without a shell, or an odd config object
        return False


def interactive() -> bool:
    """Whether bars may redraw in place: stderr is a terminal, or this is a notebook."""
    try:
        tty = sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        tty = False
    return tty or _in_notebook()


class LogBar(_std_tqdm):
    """A tqdm bar for log files: a whole line at the start, at each further tenth of ``total`` (or every
    ``LOG_INTERVAL`` seconds without a total) and at the end; nothing in between."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._last_tenth = -1
        self._last_line_t = 0.0
        self._last_line = ""
        kwargs.setdefault("mininterval", 0.5)
        kwargs.setdefault("ascii", True)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        closing = self.disable  # tqdm.close marks the bar disabled before its last display
        if msg is not None and not closing:
            return False
        if self.total:
            tenth = int(10 * self.n / self.total)
            due = tenth > self._last_tenth
        else:
            tenth = self._last_tenth
            due = self._last_tenth < 0 or time.monotonic() - self._last_line_t >= LOG_INTERVAL
        line = self.format_meter(**{**self.format_dict, "ncols": 0})
        if not (due or closing) or line == self._last_line:
            return True
        self._last_tenth, self._last_line_t, self._last_line = tenth, time.monotonic(), line
        # tqdm.close writes the newline after the last display of a bar it leaves
        leave = self.leave if self.leave is not None else pos in (0, None)
        end = "" if closing and msg is None and leave else "\n"
        self.fp.write(line + end)
        self.fp.flush()
        return not closing


def progress_bar(iterable=None, **kwargs: Any) -> _std_tqdm:
    """A tqdm bar that suits where the output goes: ``tqdm.auto`` in a terminal or notebook, ``LogBar``
    (a few whole lines) elsewhere. Takes tqdm's arguments (``total``, ``desc``, ``disable``, ``leave``...).

    Examples
    --------
    >>> bar = progress_bar(range(3), desc="demo", disable=True)
    >>> list(bar)
    [0, 1, 2]
    """
    if kwargs.get("disable") or interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    return LogBar(iterable, **kwargs)


@contextlib.contextmanager
def dependency_warnings_once() -> Iterator[None]:
    """Show each warning raised inside the block at most once per process (same category and message),
    through the caller's warning filters; for dependencies that warn on every object built (TransformerLens
    3.9's ``HookedTransformer is deprecated``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        key = (w.category, str(w.message))
        if key in _SHOWN:
            continue
        _SHOWN.add(key)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
