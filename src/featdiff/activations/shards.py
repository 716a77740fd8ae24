"""Reading an ActivationSet's safetensors shards row range by row range, without loading a file whole.

``ShardStore`` knows where each shard's rows start; ``read`` opens only the shards that hold the rows asked
for and reads, per shard, one contiguous slice (``safe_open(...).get_slice``), so what is held in memory is
bounded by a shard, whatever the size of the set. ``ActivationColumn`` is one checkpoint's rows of a view
(an index array over the same shards): ``x[a:b]`` is another view, ``x.read(a, b)`` / ``x.chunks(n)`` give
tensors. ``dictionaries/stats.py`` streams codes over either a tensor or such a column.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff.errors import FeatdiffError


class ShardStore:
    """The shards of one on-disk ActivationSet: file names, rows per shard, d_model; reads rows by index."""

    def __init__(self, files: Sequence[Path], sizes: Sequence[int], names: Sequence[str], d_model: int):
        self.files = [Path(f) for f in files]
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.names = list(names)
        self.d_model = int(d_model)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def read(
        self, names: Sequence[str], rows: Int[Tensor, " k"] | slice
    ) -> dict[str, Float[Tensor, "k d_in"]]:
        """Rows ``rows`` (global row numbers, any order; or a slice with step 1) of each checkpoint in
        ``names``, float32, in the order asked for. Each shard touched is opened once and read as one slice."""
        from safetensors import safe_open  # deferred: only on-disk sets read shards

        if isinstance(rows, slice):
            start, stop = rows.start or 0, rows.stop
            n = max(0, stop - start)
            out = {name: torch.empty(n, self.d_model) for name in names}
            if n == 0:
                return out
            shard_ids = range(
                int(np.searchsorted(self.offsets, start, "right")) - 1,
                int(np.searchsorted(self.offsets, max(stop - 1, start), "right")),
            )
            pieces = []
            for s in shard_ids:
                lo = max(start, int(self.offsets[s])) - int(self.offsets[s])
                hi = min(stop, int(self.offsets[s + 1])) - int(self.offsets[s])
                if hi > lo:
                    pieces.append((s, lo, hi))
            at = 0
            for s, lo, hi in pieces:
                with self._open(safe_open, s) as f:
                    for name in names:
                        out[name][at : at + hi - lo] = self._slice(f, s, name, lo, hi)
                at += hi - lo
            return out
        rows_np = np.asarray(rows, dtype=np.int64)
        out = {name: torch.empty(len(rows_np), self.d_model) for name in names}
        if not len(rows_np):
            return out
        shard = np.searchsorted(self.offsets, rows_np, "right") - 1
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(len(self.files) + 1))
        for s in range(len(self.files)):
            pos = order[bounds[s] : bounds[s + 1]]
            if not len(pos):
                continue
            local = rows_np[pos] - self.offsets[s]
            lo, hi = int(local.min()), int(local.max()) + 1
            contiguous = hi - lo == len(local) and bool((np.diff(local) == 1).all())
            pos_t = torch.from_numpy(pos)
            with self._open(safe_open, s) as f:
                for name in names:
                    block = self._slice(f, s, name, lo, hi)
                    out[name][pos_t] = block if contiguous else block[torch.from_numpy(local - lo)]
        return out

    def _open(self, safe_open, s: int):
        try:
            return safe_open(str(self.files[s]), framework="pt")
        except Exception as e:  # missing or corrupted shard
            raise FeatdiffError(
                f"Cannot read activation shard {self.files[s]}: {e}. Re-collect the activations."
            ) from None

    def _slice(self, f, s: int, name: str, lo: int, hi: int) -> Tensor:
        try:
            return f.get_slice(name)[lo:hi].float()
        except Exception as e:
            raise FeatdiffError(
                f"Activation shard {self.files[s]} has no readable {name!r} rows ({type(e).__name__}: {e}); "
                "re-collect the activations."
            ) from None


class ActivationColumn:
    """One checkpoint's activations in an on-disk ActivationSet, shape (n_tokens, d_in), never loaded whole
    unless asked: ``x[a:b]`` (or ``x[index]``) is a view, ``x.read(a, b)``, ``x.chunks(n)`` and ``x.load()``
    give float32 tensors. ``ActivationSet.column(name)`` returns one; ``featdiff.dictionaries.stats``
    (``encode``, ``code_stats``, ``explained_variance``, ...) stream over it chunk by chunk.
    """

    ndim = 2
    dtype = torch.float32

    def __init__(self, store: ShardStore, name: str, rows: Int[Tensor, " n"] | slice):
        self.store, self.name, self._rows = store, name, rows

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.store.d_model))

    def __len__(self) -> int:
        r = self._rows
        return r.stop - r.start if isinstance(r, slice) else len(r)

    def __repr__(self) -> str:
        return f"ActivationColumn({self.name!r}, shape={tuple(self.shape)}, on disk)"

    def __getitem__(self, key: slice | Int[Tensor, " k"]) -> ActivationColumn:
        return ActivationColumn(self.store, self.name, compose_rows(self._rows, key, len(self)))

    def read(self, start: int = 0, stop: int | None = None) -> Float[Tensor, "k d_in"]:
        """Rows ``start:stop`` of the view as a float32 tensor (read from the shards now)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return self.store.read([self.name], compose_rows(self._rows, slice(start, stop), len(self)))[
            self.name
        ]

    def chunks(self, size: int, block_bytes: int = 1 << 25) -> Iterator[Float[Tensor, "k d_in"]]:
        """The view's rows in order, ``size`` at a time (read from disk in blocks of about ``block_bytes``)."""
        block = max(size, (block_bytes // (4 * self.store.d_model)) // size * size)
        for b0 in range(0, len(self), block):
            rows = self.read(b0, b0 + block)
            for start in range(0, len(rows), size):
                yield rows[start : start + size]

    def load(self) -> Float[Tensor, "n d_in"]:
        """Every row of the view in memory (what ``acts[name]`` does on an on-disk set)."""
        return self.read()


def compose_rows(rows: Int[Tensor, " n"] | slice, key, n: int) -> Int[Tensor, " k"] | slice:
    """Global rows of the positions ``key`` (a slice with step 1, an index tensor or array, or a boolean mask)
    of a view whose positions map to global rows ``rows`` (a slice, kept a slice where it can be)."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1:
            stop = max(start, stop)
            if isinstance(rows, slice):
                return slice(rows.start + start, rows.start + stop)
            return rows[start:stop]
        key = torch.arange(start, stop, step)
    key = torch.as_tensor(np.asarray(key)) if not isinstance(key, Tensor) else key
    if key.dtype == torch.bool:
        if key.shape != (n,):
            raise FeatdiffError(
                f"A boolean row mask must have one entry per token ({n}); got {tuple(key.shape)}."
            )
        key = torch.nonzero(key).squeeze(1)
    key = key.long().reshape(-1)
    if len(key) and (int(key.min()) < -n or int(key.max()) >= n):
        raise FeatdiffError(f"Row index out of range for {n} tokens: [{int(key.min())}, {int(key.max())}].")
    key = torch.where(key < 0, key + n, key)
    return key + rows.start if isinstance(rows, slice) else rows[key]


def view_batches(
    store: ShardStore,
    rows: Int[Tensor, " n"] | slice,
    names: Sequence[str],
    batch_size: int,
    shuffle: bool,
    seed: int,
    buffer_tokens: int,
) -> Iterator[dict[str, Float[Tensor, "batch d_in"]]]:
    """One pass over the view ``rows`` in batches {name: rows}, holding at most about ``buffer_tokens``
    rows per checkpoint (plus one batch) in memory.

    Without shuffling, or when the whole view fits in the buffer, the batches are those of an in-memory
    ActivationSet holding the same rows (the same ``torch.randperm(n, seed)`` order). Otherwise a shuffle
    buffer: the view is cut into pieces of ``buffer_tokens // 8`` consecutive rows (at least a batch), the
    pieces are taken in a seeded random order, 8 at a time, and the rows of each buffer (with the few left
    over from the previous one) are permuted and cut into full batches; the short remainder comes last.
    """
    n = len(rows) if not isinstance(rows, slice) else rows.stop - rows.start
    buffer_tokens = max(int(buffer_tokens), batch_size)

    def read(a: int, b: int) -> dict[str, Tensor]:
        return store.read(names, compose_rows(rows, slice(a, b), n))

    if not shuffle or n <= buffer_tokens:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else None
        chunk = n if perm is not None else max(batch_size, (buffer_tokens // batch_size) * batch_size)
        for c0 in range(0, n, chunk):
            block = read(c0, c0 + chunk)
            for start in range(0, min(chunk, n - c0), batch_size):
                if perm is None:
                    yield {k: v[start : start + batch_size] for k, v in block.items()}
                else:
                    idx = perm[start : start + batch_size]
                    yield {k: v[idx] for k, v in block.items()}
        return
    g = torch.Generator().manual_seed(seed)
    piece = max(batch_size, buffer_tokens // 8)
    starts = torch.arange(0, n, piece)[torch.randperm(-(-n // piece), generator=g)].tolist()
    per_buffer = max(1, buffer_tokens // piece)
    carry: dict[str, Tensor] | None = None
    for i in range(0, len(starts), per_buffer):
        parts = [read(s, s + piece) for s in starts[i : i + per_buffer]]
        if carry is not None:
            parts.append(carry)
        block = {k: torch.cat([p[k] for p in parts]) for k in names}
        del parts
        m = len(block[names[0]])
        perm = torch.randperm(m, generator=g)
        full = (m // batch_size) * batch_size
        for start in range(0, full, batch_size):
            idx = perm[start : start + batch_size]
            yield {k: v[idx] for k, v in block.items()}
        carry = {k: v[perm[full:]] for k, v in block.items()} if full < m else None
    if carry is not None:
        yield carry
