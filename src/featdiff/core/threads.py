"""One helper: run a block with a given number of torch threads, restoring the setting afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op threads to ``n`` inside the block (None: leave them); the tiny models of the
    lab run several times faster on 1 thread than on 2 of a shared CPU."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
