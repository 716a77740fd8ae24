"""The one error type featdiff raises for bad input, its warning type, and how warnings are issued: at
the caller's line (the first frame outside featdiff, e.g. the notebook cell), repeated ones grouped."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Iterator


class FeatdiffError(ValueError):
    """Bad input to a featdiff function: the message names the input and says what to do.

    Examples
    --------
    >>> try:
    ...     raise FeatdiffError("The 'metric' parameter must be one of ['drift']; got 'drfit'.")
    ... except ValueError as e:
    ...     print(type(e).__name__)
    FeatdiffError
    """


def check_choice(param: str, value: object, allowed, where: str = "") -> None:
    """Raise FeatdiffError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        of = f" of {where}" if where else ""
        raise FeatdiffError(f"The '{param}' parameter{of} must be one of {allowed}; got {value!r}.")


class FeatdiffWarning(UserWarning):
    """A reading that may mislead (many dead latents, a low noise floor, few tokens, an unsettled loss):
    the message says what was seen and what to change.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("60 % of the base SAE's latents are dead; lower d_sae.", FeatdiffWarning)
    >>> w[0].category.__name__
    'FeatdiffWarning'
    """


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_stacklevel() -> int:
    """The ``stacklevel`` (for a ``warnings.warn`` called by ``warn``) of the first frame outside featdiff."""
    frame, level = sys._getframe(2), 2  # 2: the caller of warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 2


def warn(message: str, category: type[Warning] = FeatdiffWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside featdiff: the warning names the user's
    line (a notebook cell, a script), not the featdiff module that noticed the problem.

    Examples
    --------
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn("few tokens; collect more.")
    >>> w[0].filename.endswith("errors.py"), w[0].category.__name__
    (False, 'FeatdiffWarning')
    """
    warnings.warn(message, category, stacklevel=_user_stacklevel())


_WHO = re.compile(r"^([\w.\- ]{1,40}): ")  # a message's leading "checkpoint: " (or "crosscoder view: ")


def _shape(message: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", _WHO.sub("", message))


def group_messages(messages: list[str]) -> list[str]:
    """Messages that differ only in their numbers and their leading ``name: `` as one line each: the first
    of them with a count and the names (``[3 alike: base, rl, sft]``); order of first appearance, exact
    repeats dropped.

    Examples
    --------
    >>> group_messages(["rl: loss fell by 5.7 %.", "sft: loss fell by 6.1 %.", "base: 60 % dead."])
    ['rl: loss fell by 5.7 %. [2 alike: rl, sft]', 'base: 60 % dead.']
    >>> group_messages(["cc 1 had not settled", "cc 2 had not settled", "cc 1 had not settled"])
    ['cc 1 had not settled [2 alike, numbers differ]']
    """
    groups: dict[str, list[str]] = {}
    for m in messages:
        ms = groups.setdefault(_shape(m), [])
        if m not in ms:
            ms.append(m)
    out = []
    for ms in groups.values():
        if len(ms) == 1:
            out.append(ms[0])
            continue
        who = [w.group(1) for w in map(_WHO.match, ms) if w]
        tail = f": {', '.join(dict.fromkeys(who))}" if len(who) == len(ms) else ", numbers differ"
        out.append(f"{ms[0]} [{len(ms)} alike{tail}]")
    return out


@contextlib.contextmanager
def grouped_warnings() -> Iterator[None]:
    """Within the block, warnings of one category that differ only in their numbers (and a leading
    ``name: ``) are issued once, at the end (``group_messages``), where the first of them was issued;
    every warning goes through the caller's filters.

    Examples
    --------
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     with grouped_warnings():
    ...         for i in range(3):
    ...             warn(f"crosscoder {i} had not settled")
    >>> [str(x.message) for x in w]
    ['crosscoder 0 had not settled [3 alike, numbers differ]']
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    groups: dict[tuple, list] = {}
    for w in caught:
        groups.setdefault((w.category, _shape(str(w.message))), []).append(w)
    for ws in groups.values():
        (message,) = group_messages([str(x.message) for x in ws])
        warnings.warn_explicit(message, ws[0].category, ws[0].filename, ws[0].lineno, source=ws[0].source)
