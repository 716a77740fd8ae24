"""Paired activations: the same tokens through every checkpoint, row i of every model from the same token."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from featdiff import constants
from featdiff._version import __version__
from featdiff.activations.corpus import (
    TensorWindows,
    TextWindows,
    as_data,
    is_text,
    scan,
    text_windows,
    with_keep,
)
from featdiff.activations.shards import ActivationColumn, ShardStore, compose_rows, view_batches
from featdiff.core.io import atomic_dir, write_json
from featdiff.core.output import progress_bar
from featdiff.core.runstate import RowChunks, model_fingerprint, tensor_hash
from featdiff.errors import FeatdiffError, FeatdiffWarning
from featdiff.models.models import check_compatible, default_hook, load_model, stop_layer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

_TOKEN_IDS = "__token_ids__"  # key of the token ids in a shard
_SEQUENCE_IDS = "__sequence_ids__"  # key of the sequence ids (which input row each token came from)


def _check_acts(name: str, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise FeatdiffError(f"Activations of '{name}' must be a torch.Tensor; got {type(x).__name__}.")
    if x.ndim != 2:
        raise FeatdiffError(
            f"Activations of '{name}' must have shape (n_tokens, d_model); got {tuple(x.shape)}. "
            "Flatten batch and position first, e.g. x.reshape(-1, x.shape[-1])."
        )
    if x.shape[0] == 0:
        raise FeatdiffError(f"Activations of '{name}' are empty (0 tokens); pass at least one token.")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise FeatdiffError(
            f"Activations of '{name}' contain NaN or infinite values in {bad} of {x.shape[0]} rows; "
            "check the checkpoint (e.g. fp16 overflow) or drop those rows before building an ActivationSet."
        )
    return x


@dataclass
class ActivationSet:
    """Activations of several checkpoints at one hook, paired by token.

    Examples
    --------
    >>> import torch
    >>> acts = ActivationSet.from_tensors({"base": torch.randn(10, 4), "rl": torch.randn(10, 4)})
    >>> acts.names, acts.n_tokens, acts.d_model
    (['base', 'rl'], 10, 4)
    >>> [b["rl"].shape for b in acts.batches(4, shuffle=False)]
    [torch.Size([4, 4]), torch.Size([4, 4]), torch.Size([2, 4])]
    """

    acts: dict[str, Float[Tensor, "n_tokens d_in"]]
    hook: str | None = None
    token_ids: Int[Tensor, " n_tokens"] | None = None
    meta: dict = field(default_factory=dict)
    sequence_ids: Int[Tensor, " n_tokens"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.acts, Mapping) or len(self.acts) == 0:
            raise FeatdiffError("An ActivationSet needs a non-empty dict {checkpoint name: tensor}.")
        shapes = {}
        for name, x in self.acts.items():
            if not isinstance(name, str) or not name:
                raise FeatdiffError(f"Checkpoint names must be non-empty strings; got {name!r}.")
            shapes[name] = tuple(_check_acts(name, x).shape)
        if len(set(shapes.values())) != 1:
            raise FeatdiffError(
                f"Paired activations must all have the same shape (n_tokens, d_model); got {shapes}."
            )
        self.acts = {k: v.detach().float().contiguous() for k, v in self.acts.items()}
        if self.token_ids is not None and len(self.token_ids) != self.n_tokens:
            raise FeatdiffError(
                f"token_ids has {len(self.token_ids)} entries but the activations have {self.n_tokens} rows."
            )
        if self.sequence_ids is not None:
            self.sequence_ids = torch.as_tensor(self.sequence_ids).long()
            if self.sequence_ids.shape != (self.n_tokens,):
                raise FeatdiffError(
                    f"sequence_ids must have one entry per token ({self.n_tokens}); "
                    f"got shape {tuple(self.sequence_ids.shape)}."
                )

    @classmethod
    def from_tensors(
        cls,
        tensors: Mapping[str, Float[Tensor, "n_tokens d_in"]],
        hook: str | None = None,
        token_ids: Int[Tensor, " n_tokens"] | None = None,
        sequence_ids: Int[Tensor, " n_tokens"] | None = None,
    ) -> ActivationSet:
        """Wrap activations you already have (row i of every tensor must come from the same token).

        ``sequence_ids[i]`` (optional) says which sequence token i came from, so that ``split`` keeps
        each sequence on one side; without it every token counts as its own sequence.
        """
        return cls(dict(tensors), hook=hook, token_ids=token_ids, sequence_ids=sequence_ids)

    @property
    def names(self) -> list[str]:
        return list(self.acts)

    @property
    def n_tokens(self) -> int:
        return next(iter(self.acts.values())).shape[0]

    @property
    def d_model(self) -> int:
        return next(iter(self.acts.values())).shape[1]

    d_in = d_model

    def __getitem__(self, name: str) -> Float[Tensor, "n_tokens d_in"]:
        if name not in self.acts:
            raise FeatdiffError(f"No checkpoint named {name!r} in this ActivationSet; it has {self.names}.")
        return self.acts[name]

    def __contains__(self, name: object) -> bool:
        return name in self.acts

    def column(self, name: str) -> Float[Tensor, "n_tokens d_in"] | ActivationColumn:
        """Checkpoint ``name``'s activations without loading them: the tensor itself here, an
        ``ActivationColumn`` (read chunk by chunk) on an on-disk set. The library's own passes use this."""
        return self[name]

    def rows(self, name: str, start: int, stop: int) -> Float[Tensor, "k d_in"]:
        """Rows ``start:stop`` of checkpoint ``name`` as a tensor (on an on-disk set, only those are read)."""
        return self[name][start:stop]

    def row_norm_mean(self, name: str) -> float:
        """The mean L2 norm of checkpoint ``name``'s rows (streamed on an on-disk set)."""
        return float(self[name].norm(dim=1).mean())

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return f"ActivationSet(names={self.names}, n_tokens={self.n_tokens}, d_model={self.d_model}, hook={self.hook!r})"

    def select(self, names: list[str]) -> ActivationSet:
        """The same tokens for a subset (or a reordering) of the checkpoints."""
        return ActivationSet(
            {n: self[n] for n in names}, self.hook, self.token_ids, dict(self.meta), self.sequence_ids
        )

    def subset(self, index: Int[Tensor, " k"] | slice) -> ActivationSet:
        """The rows ``index`` of every checkpoint (pairing is kept)."""
        tid = None if self.token_ids is None else self.token_ids[index]
        sid = None if self.sequence_ids is None else self.sequence_ids[index]
        return ActivationSet(
            {n: x[index] for n, x in self.acts.items()}, self.hook, tid, dict(self.meta), sid
        )

    def split(self, fraction: float = 0.2, seed: int = 0) -> tuple[ActivationSet, ActivationSet]:
        """A random (train, held-out) split by sequence, e.g. to evaluate dictionaries on unseen text.

        With ``sequence_ids`` (``collect_activations`` records them) whole sequences go to one side: about
        ``fraction`` of the sequences (at least one, never all) are held out, so no sequence has tokens on
        both sides and held-out numbers are not inflated by neighbouring tokens of a training sequence.
        Without them (``from_tensors`` without ``sequence_ids``) each token counts as its own sequence, with a
        ``FeatdiffWarning``; the same happens, with a warning, when there is only one sequence.

        Examples
        --------
        >>> import torch
        >>> acts = ActivationSet.from_tensors({"base": torch.randn(12, 2)}, sequence_ids=torch.arange(12) // 3)
        >>> train, held = acts.split(0.25, seed=0)
        >>> set(train.sequence_ids.tolist()) & set(held.sequence_ids.tolist()), held.n_tokens
        (set(), 3)
        """
        import warnings

        if not 0 < fraction < 1:
            raise FeatdiffError(f"split fraction must be in (0, 1); got {fraction}.")
        g = torch.Generator().manual_seed(seed)
        seqs = None if self.sequence_ids is None else torch.unique(self.sequence_ids)
        if seqs is None or len(seqs) < 2:
            why = "has no sequence ids" if seqs is None else "holds a single sequence"
            warnings.warn(
                f"ActivationSet.split: the set {why}, so tokens are split one by one and a sequence may have "
                "tokens in both the training and the held-out part (held-out numbers come out optimistic). "
                "Pass sequence_ids= to ActivationSet.from_tensors, or collect with collect_activations.",
                FeatdiffWarning,
                stacklevel=2,
            )
            perm = torch.randperm(self.n_tokens, generator=g)
            n_test = max(1, int(round(fraction * self.n_tokens)))
            return self.subset(perm[n_test:]), self.subset(perm[:n_test])
        seqs = seqs[torch.randperm(len(seqs), generator=g)]
        n_test = min(len(seqs) - 1, max(1, int(round(fraction * len(seqs)))))
        held = torch.isin(self.sequence_ids, seqs[:n_test])
        return self.subset(torch.nonzero(~held).squeeze(1)), self.subset(torch.nonzero(held).squeeze(1))

    def batches(
        self, batch_size: int, shuffle: bool = True, seed: int = 0, names: list[str] | None = None
    ) -> Iterator[dict[str, Float[Tensor, "batch d_in"]]]:
        """One pass over the tokens in batches {name: rows}; the same rows for every checkpoint."""
        if batch_size <= 0:
            raise FeatdiffError(f"batch_size must be positive; got {batch_size}.")
        names = self.names if names is None else names
        order = (
            torch.randperm(self.n_tokens, generator=torch.Generator().manual_seed(seed))
            if shuffle
            else torch.arange(self.n_tokens)
        )
        for start in range(0, self.n_tokens, batch_size):
            idx = order[start : start + batch_size]
            yield {n: self[n][idx] for n in names}

    def save(self, path: str | os.PathLike, shard_tokens: int = 65536) -> Path:
        """Write the set to a folder of safetensors shards (atomically); read it back with ``load``.

        Examples
        --------
        >>> import tempfile, torch
        >>> acts = ActivationSet.from_tensors({"base": torch.randn(5, 3)}, token_ids=torch.arange(5))
        >>> path = acts.save(tempfile.mkdtemp() + "/acts", shard_tokens=2)
        >>> back = ActivationSet.load(path)
        >>> torch.equal(back["base"], acts["base"]), back.token_ids.tolist()
        (True, [0, 1, 2, 3, 4])
        """
        if shard_tokens <= 0:
            raise FeatdiffError(f"shard_tokens must be positive; got {shard_tokens}.")
        path = Path(path)
        with atomic_dir(path) as tmp:
            writer = _ShardWriter(tmp, self.names, shard_tokens)
            writer.add(self.acts, self.token_ids, self.sequence_ids)
            n_shards = writer.close()
            write_json(tmp / constants.ACTS_META, self._meta_json(n_shards))
        return path

    def _meta_json(self, n_shards: int) -> dict:
        return _meta_json(self.names, self.hook, self.n_tokens, self.d_model, n_shards, self.meta)

    @classmethod
    def open(cls, path: str | os.PathLike, buffer_tokens: int | None = None) -> OnDiskActivationSet:
        """The set in a folder written by ``save`` or ``collect_activations(..., out_dir=...)``, left on disk:
        only the token and sequence ids are read now; activations are read chunk by chunk as they are used
        (see ``OnDiskActivationSet``). ``buffer_tokens`` bounds the shuffle buffer of ``batches`` (rows per
        checkpoint; default: about 256 MiB of activations).

        Examples
        --------
        >>> import tempfile, torch
        >>> acts = ActivationSet.from_tensors({"base": torch.randn(6, 3)}, sequence_ids=torch.arange(6) // 2)
        >>> disk = ActivationSet.open(acts.save(tempfile.mkdtemp() + "/acts", shard_tokens=4))
        >>> disk.n_tokens, torch.equal(disk["base"], acts["base"])  # disk["base"] loads that checkpoint
        (6, True)
        >>> torch.equal(disk.column("base")[2:5].read(), acts["base"][2:5])  # a view: reads 3 rows
        True
        """
        path = Path(path)
        meta, n_shards, n_tokens = _read_meta(path)
        files = [path / constants.ACTS_SHARD.format(index=i) for i in range(n_shards)]
        return OnDiskActivationSet._from_files(files, meta, n_tokens, buffer_tokens)

    @classmethod
    def load(cls, path: str | os.PathLike, in_memory: bool = True) -> ActivationSet:
        """Read a folder written by ``save`` or by ``collect_activations(..., out_dir=...)`` into memory;
        ``in_memory=False`` leaves it on disk (``ActivationSet.open``)."""
        if not in_memory:
            return cls.open(path)
        path = Path(path)
        meta, n_shards, n_tokens = _read_meta(path)
        names = meta["names"]
        parts: dict[str, list[Tensor]] = {n: [] for n in names}
        tids: list[Tensor] = []
        sids: list[Tensor] = []
        for i in range(n_shards):
            shard = path / constants.ACTS_SHARD.format(index=i)
            try:
                tensors = load_file(str(shard))
            except Exception as e:  # missing or corrupted shard
                raise FeatdiffError(
                    f"Cannot read activation shard {shard}: {e}. Re-collect the activations."
                ) from None
            missing = [n for n in parts if n not in tensors]
            if missing:
                raise FeatdiffError(
                    f"Activation shard {shard} lacks checkpoints {missing}; re-collect the activations."
                )
            for n in parts:
                parts[n].append(tensors[n])
            if _TOKEN_IDS in tensors:
                tids.append(tensors[_TOKEN_IDS])
            if _SEQUENCE_IDS in tensors:
                sids.append(tensors[_SEQUENCE_IDS])
        acts = {n: torch.cat(p) for n, p in parts.items()}
        out = cls(
            acts,
            meta.get("hook"),
            torch.cat(tids) if tids else None,
            meta.get("meta") or {},
            torch.cat(sids) if sids else None,
        )
        if out.n_tokens != n_tokens:
            raise FeatdiffError(f"{path} holds {out.n_tokens} tokens but its metadata says {n_tokens}.")
        return out


# ----------------------------------------------------------------------------------------- on disk


def _read_meta(path: Path) -> tuple[dict, int, int]:
    meta_file = path / constants.ACTS_META
    if not meta_file.is_file():
        raise FeatdiffError(
            f"{path} is not an ActivationSet folder (no {constants.ACTS_META}); "
            "write one with ActivationSet.save or collect_activations(..., out_dir=...)."
        )
    try:
        meta = json.loads(meta_file.read_text())
        list(meta["names"])
        n_shards, n_tokens = int(meta["n_shards"]), int(meta["n_tokens"])
    except (ValueError, KeyError, TypeError) as e:
        raise FeatdiffError(
            f"{meta_file} is corrupted ({type(e).__name__}: {e}); re-collect the activations."
        ) from None
    if meta.get("format_version", constants.FORMAT_VERSION) > constants.FORMAT_VERSION:
        raise FeatdiffError(f"{path} was written by a newer featdiff; upgrade featdiff to read it.")
    return meta, n_shards, n_tokens


class _LoadingActs(Mapping):
    """``OnDiskActivationSet.acts``: a mapping whose values are loaded from disk when looked up."""

    def __init__(self, view: OnDiskActivationSet):
        self._view = view

    def __getitem__(self, name: str) -> Tensor:
        return self._view[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view.names)

    def __len__(self) -> int:
        return len(self._view.names)


class OnDiskActivationSet(ActivationSet):
    """An ActivationSet whose activations stay in their safetensors shards and are read chunk by chunk
    (``ActivationSet.open``, ``collect_activations(..., out_dir=...)``); the token and sequence ids are in
    memory (8 bytes a token each).

    The same API as an in-memory set, with these differences: ``subset``, ``split`` and ``select`` return
    views (index arrays over the same shards; nothing is copied or written); ``column(name)`` is an
    ``ActivationColumn`` that the library's own passes (training, scoring, alignment) stream over;
    ``acts[name]`` *loads* that checkpoint's rows of the view into memory (use ``column`` or ``rows`` to
    avoid it); ``batches(shuffle=True)`` shuffles through a bounded buffer of ``buffer_tokens`` rows
    (``featdiff.activations.shards.view_batches``): where the view fits in the buffer the batches equal an in-memory
    set's, beyond it the order differs (a random order of pieces, mixed within each buffer).
    """

    def __init__(
        self,
        store: ShardStore,
        rows: Int[Tensor, " n_tokens"] | slice,
        names: list[str],
        hook: str | None,
        token_ids: Int[Tensor, " n_tokens"] | None,
        meta: dict,
        sequence_ids: Int[Tensor, " n_tokens"] | None,
        buffer_tokens: int | None = None,
    ):
        self._store, self._rows, self._names = store, rows, list(names)
        self.hook, self.token_ids, self.meta, self.sequence_ids = hook, token_ids, meta, sequence_ids
        if buffer_tokens is not None and (isinstance(buffer_tokens, bool) or int(buffer_tokens) <= 0):
            raise FeatdiffError(f"buffer_tokens must be a positive int; got {buffer_tokens!r}.")
        self.buffer_tokens = buffer_tokens
        self._keys: dict[str, str] = {}  # a name -> the checkpoint it reads (aliases, see _aliased)

    @classmethod
    def _from_files(
        cls, files: list[Path], meta: dict, n_tokens: int, buffer_tokens: int | None
    ) -> OnDiskActivationSet:
        from safetensors import safe_open  # deferred: only on-disk sets read shards

        names, sizes, tids, sids, d_model = list(meta["names"]), [], [], [], meta.get("d_model")
        for f_path in files:
            try:
                with safe_open(str(f_path), framework="pt") as f:
                    keys = set(f.keys())
                    missing = [n for n in names if n not in keys]
                    if missing:
                        raise FeatdiffError(
                            f"Activation shard {f_path} lacks checkpoints {missing}; re-collect the activations."
                        )
                    rows, d_model = f.get_slice(names[0]).get_shape()
                    sizes.append(int(rows))
                    if _TOKEN_IDS in keys:
                        tids.append(f.get_tensor(_TOKEN_IDS))
                    if _SEQUENCE_IDS in keys:
                        sids.append(f.get_tensor(_SEQUENCE_IDS))
            except FeatdiffError:
                raise
            except Exception as e:  # missing or corrupted shard
                raise FeatdiffError(f"Cannot read activation shard {f_path}: {e}. Re-collect the activations.") from None
        if sum(sizes) != n_tokens or not sizes:
            raise FeatdiffError(f"{files[0].parent} holds {sum(sizes)} tokens but its metadata says {n_tokens}.")
        store = ShardStore(files, sizes, names, int(d_model))
        return cls(
            store,
            slice(0, n_tokens),
            names,
            meta.get("hook"),
            torch.cat(tids) if len(tids) == len(files) else None,
            meta.get("meta") or {},
            torch.cat(sids).long() if len(sids) == len(files) else None,
            buffer_tokens,
        )

    @property
    def acts(self) -> Mapping[str, Tensor]:  # type: ignore[override]
        return _LoadingActs(self)

    __eq__ = object.__eq__  # the dataclass's field-wise == would load every checkpoint
    __hash__ = object.__hash__

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def n_tokens(self) -> int:
        r = self._rows
        return r.stop - r.start if isinstance(r, slice) else len(r)

    @property
    def d_model(self) -> int:
        return self._store.d_model

    d_in = d_model

    @property
    def path(self) -> Path:
        """The folder of the shards."""
        return self._store.files[0].parent

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __repr__(self) -> str:
        return (
            f"OnDiskActivationSet(names={self.names}, n_tokens={self.n_tokens}, d_model={self.d_model}, "
            f"hook={self.hook!r}, path={str(self.path)!r})"
        )

    def column(self, name: str) -> ActivationColumn:
        if name not in self._names:
            raise FeatdiffError(f"No checkpoint named {name!r} in this ActivationSet; it has {self.names}.")
        return ActivationColumn(self._store, self._keys.get(name, name), self._rows)

    def __getitem__(self, name: str) -> Float[Tensor, "n_tokens d_in"]:
        """Checkpoint ``name``'s rows of this view, loaded into memory (``column`` leaves them on disk)."""
        return self.column(name).load()

    def rows(self, name: str, start: int, stop: int) -> Float[Tensor, "k d_in"]:
        return self.column(name).read(start, stop)

    def row_norm_mean(self, name: str, chunk: int = 1 << 16) -> float:
        col = self.column(name)
        if len(col) <= chunk:  # one chunk: the same float32 arithmetic as in memory
            return float(col.load().norm(dim=1).mean())
        total = sum(float(x.norm(dim=1).double().sum()) for x in col.chunks(chunk))
        return total / len(col)

    def _view(self, rows, names, token_ids, sequence_ids) -> OnDiskActivationSet:
        out = OnDiskActivationSet(
            self._store, rows, names, self.hook, token_ids, dict(self.meta), sequence_ids, self.buffer_tokens
        )
        out._keys = {n: k for n, k in self._keys.items() if n in names}
        return out

    def _aliased(self, name: str, alias: str) -> OnDiskActivationSet:
        """A view holding ``name`` and ``alias``, both reading ``name``'s rows (a replica SAE's pair)."""
        out = self.select([name])
        out._names.append(alias)
        out._keys[alias] = self._keys.get(name, name)
        return out

    def select(self, names: list[str]) -> OnDiskActivationSet:
        for n in names:
            self.column(n)  # raises on an unknown name
        return self._view(self._rows, list(names), self.token_ids, self.sequence_ids)

    def subset(self, index: Int[Tensor, " k"] | slice) -> OnDiskActivationSet:
        """A view of the rows ``index`` (an index array over the same shards; nothing is copied)."""
        rows = compose_rows(self._rows, index, self.n_tokens)
        tid = None if self.token_ids is None else self.token_ids[index]
        sid = None if self.sequence_ids is None else self.sequence_ids[index]
        return self._view(rows, self.names, tid, sid)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        names: list[str] | None = None,
        buffer_tokens: int | None = None,
    ) -> Iterator[dict[str, Float[Tensor, "batch d_in"]]]:
        """One pass over the tokens in batches {name: rows}, read from the shards through a buffer of
        ``buffer_tokens`` rows per checkpoint (default: the set's, else about 256 MiB in all)."""
        if batch_size <= 0:
            raise FeatdiffError(f"batch_size must be positive; got {batch_size}.")
        names = self.names if names is None else list(names)
        for n in names:
            self.column(n)
        buf = buffer_tokens or self.buffer_tokens or max(1024, (1 << 28) // (4 * self.d_model * len(names)))
        keys = [self._keys.get(n, n) for n in names]
        if len(set(keys)) == len(keys) and keys == names:
            return view_batches(self._store, self._rows, names, batch_size, shuffle, seed, buf)
        batches = view_batches(self._store, self._rows, sorted(set(keys)), batch_size, shuffle, seed, buf)
        return ({n: b[k] for n, k in zip(names, keys, strict=True)} for b in batches)

    def save(self, path: str | os.PathLike, shard_tokens: int = 65536) -> Path:
        """Write this view to a new folder of shards, chunk by chunk (never loaded whole)."""
        if shard_tokens <= 0:
            raise FeatdiffError(f"shard_tokens must be positive; got {shard_tokens}.")
        path = Path(path)
        with atomic_dir(path) as tmp:
            writer = _ShardWriter(tmp, self.names, shard_tokens)
            for start in range(0, self.n_tokens, shard_tokens):
                sl = slice(start, start + shard_tokens)
                writer.add(
                    {n: self.column(n).read(start, start + shard_tokens) for n in self.names},
                    None if self.token_ids is None else self.token_ids[sl],
                    None if self.sequence_ids is None else self.sequence_ids[sl],
                )
            write_json(tmp / constants.ACTS_META, self._meta_json(writer.close()))
        return path


# ----------------------------------------------------------------------------------------- shard writing


def _meta_json(
    names: list[str], hook: str | None, n_tokens: int, d_model: int, n_shards: int, meta: dict
) -> dict:

    return {
        "featdiff_version": __version__,
        "format_version": constants.FORMAT_VERSION,
        "names": list(names),
        "hook": hook,
        "n_tokens": n_tokens,
        "d_model": d_model,
        "n_shards": n_shards,
        "meta": meta,
    }


class _ShardWriter:
    """Buffer rows {name: (rows, d)} (+ token ids) and write them as shards of exactly ``shard_tokens``
    rows (the last one shorter), named like ActivationSet.save's."""

    def __init__(
        self, folder: Path, names: list[str], shard_tokens: int, template: str = constants.ACTS_SHARD
    ):
        self.folder, self.names, self.shard_tokens, self.template = (
            Path(folder),
            list(names),
            shard_tokens,
            template,
        )
        self._buf: dict[str, list[Tensor]] = {n: [] for n in self.names}
        self._tids: list[Tensor] = []
        self._sids: list[Tensor] = []
        self._n_buf = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n_shards = 0
        self.n_tokens = 0

    def add(
        self, acts: Mapping[str, Tensor], token_ids: Tensor | None = None, sequence_ids: Tensor | None = None
    ) -> None:
        n = next(iter(acts.values())).shape[0]
        if n == 0:
            return
        for name in self.names:
            self._buf[name].append(acts[name])
        if token_ids is not None:
            self._tids.append(token_ids)
        if sequence_ids is not None:
            self._sids.append(sequence_ids)
        self._n_buf += n
        while self._n_buf >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int) -> None:

        def take(parts: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
            full = parts[0] if len(parts) == 1 else torch.cat(parts)
            rest = [full[n:]] if full.shape[0] > n else []
            return full[:n].contiguous(), rest

        tensors = {}
        for name in self.names:
            tensors[name], self._buf[name] = take(self._buf[name])
        if self._tids:
            tensors[_TOKEN_IDS], self._tids = take(self._tids)
        if self._sids:
            tensors[_SEQUENCE_IDS], self._sids = take(self._sids)
        save_file(tensors, str(self.folder / self.template.format(index=self.n_shards)))
        self.n_shards += 1
        self.n_tokens += n
        self._n_buf -= n

    def close(self) -> int:
        if self._n_buf:
            self._flush(self._n_buf)
        return self.n_shards


# ----------------------------------------------------------------------------------- collect_activations


def _prepare_tokens(
    tokens, models: dict[str, HookedTransformer], attention_mask, pad_token_id
) -> tuple[Tensor, Tensor]:
    """Token ids (batch, seq) and a boolean mask of the real (non-pad) positions; text is tokenized into
    windows with the base checkpoint's tokenizer (``featdiff.activations.corpus``) and held in memory."""
    if is_text(tokens):
        return text_windows(as_data(tokens, None), models).materialize()
    if not isinstance(tokens, Tensor):
        try:
            tokens = torch.as_tensor(tokens)
        except (TypeError, ValueError, RuntimeError):
            raise FeatdiffError(
                "tokens must be an integer tensor (batch, seq) of token ids, or a list of strings when every "
                f"checkpoint has a tokenizer; got {type(tokens).__name__}."
            ) from None
    if tokens.numel() == 0:
        raise FeatdiffError(f"tokens is empty (shape {tuple(tokens.shape)}); pass at least one token.")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise FeatdiffError(f"tokens must hold integer token ids; got dtype {tokens.dtype}.")
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise FeatdiffError(f"tokens must have shape (batch, seq); got {tuple(tokens.shape)}.")
    tokens = tokens.long().cpu()
    mask = torch.ones_like(tokens, dtype=torch.bool)
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask).cpu()
        if attention_mask.shape != tokens.shape:
            raise FeatdiffError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but tokens has {tuple(tokens.shape)}."
            )
        mask &= attention_mask.bool()
    if pad_token_id is not None:
        mask &= tokens != pad_token_id
    return tokens, mask


def _model_rows(
    name: str,
    model: HookedTransformer,
    batches,
    hook: str,
    first_seq: int = 0,
) -> Iterator[Float[Tensor, "rows d_in"]]:
    """The kept rows of ``model``'s activations at ``hook`` for each batch ``(ids, mask, keep)`` of
    sequences (float32, CPU); padding is fed as id 0 and masked; the forward pass stops after the hook's
    block. ``first_seq``: the index of the first batch's first sequence (for error messages)."""
    stop, dev = stop_layer(hook), model.cfg.device
    start = first_seq
    for ids, mask, keep in batches:
        with torch.inference_mode():
            _, cache = model.run_with_cache(
                ids.masked_fill(~mask, 0).to(dev),
                names_filter=hook,
                stop_at_layer=stop,
                attention_mask=mask.long().to(dev),
                return_cache_object=False,
            )
        x = cache[hook]
        if x.shape[:2] != ids.shape:
            raise FeatdiffError(
                f"Hook {hook!r} gives activations of shape {tuple(x.shape)}, not (batch, pos, ...); "
                "pick a hook with one vector per token, e.g. featdiff.hook_name(layer)."
            )
        x = x.reshape(-1, x[0, 0].numel())[keep.reshape(-1).to(x.device)].float().cpu()
        if not torch.isfinite(x).all():
            raise FeatdiffError(
                f"Checkpoint {name!r} gives NaN or infinite activations at {hook!r} in the batch of sequences "
                f"starting at {start}; load it in float32 (load_model(..., dtype='float32')) or check its weights."
            )
        start += ids.shape[0]
        yield x


def _outliers(
    norms: dict[str, Tensor], factor: float | None
) -> tuple[Tensor, dict[str, int], dict[str, float]]:
    """Rows whose norm exceeds ``factor`` x the median norm in any checkpoint; counts and medians by name."""
    outlier = torch.zeros_like(next(iter(norms.values())), dtype=torch.bool)
    by_checkpoint, medians = {}, {}
    for name, nrm in norms.items():
        medians[name] = float(nrm.median())
        bad = (
            nrm > factor * medians[name]
            if factor is not None and medians[name] > 0
            else torch.zeros_like(outlier)
        )
        by_checkpoint[name] = int(bad.sum())
        outlier |= bad
    return outlier, by_checkpoint, medians


def _bos_token_id(models: Mapping[str, HookedTransformer]) -> int | None:
    """The BOS token id of the (first) checkpoint's tokenizer, or its featdiff_meta's; None when unknown."""
    model = next(iter(models.values()))
    tokenizer = getattr(model, "tokenizer", None)
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    if bos is None:
        bos = (getattr(model, "featdiff_meta", None) or {}).get("bos_token_id")
    return None if bos is None else int(bos)


def _dropped_message(n_kept: int, meta: dict) -> str:
    """What collect_activations dropped and why, in words: padding, first positions (and how many of them
    are the BOS token, when the tokenizer says which id that is), outlier norms."""
    n_first, n_bos, bos = meta["n_dropped_first"], meta["n_dropped_bos"], meta["bos_token_id"]
    if not n_first:
        first = "no first positions (drop_bos=False)"
    elif bos is None:
        first = (
            f"the first position of each of {n_first} sequences (no tokenizer says which id is BOS, so whether "
            "they hold a BOS token is unknown)"
        )
    elif n_bos == n_first:
        first = f"the first position of each of {n_first} sequences (all of them the BOS token {bos})"
    else:
        first = (
            f"the first position of each of {n_first} sequences ({n_bos} of them the BOS token {bos}, "
            f"{n_first - n_bos} a real token: the tokenizer does not always prepend BOS; drop_bos=False keeps "
            "them)"
        )
    outl = meta["n_dropped_outlier"]
    why = "" if not outl else f" (norm above {meta['outlier_factor']:g}x the median in some checkpoint)"
    return (
        f"collect_activations: kept {n_kept} tokens; dropped {meta['n_dropped_pad']} padding positions, "
        f"{first}, and {outl} outlier-norm tokens{why}."
    )


def collect_activations(
    models: Mapping[str, object],
    tokens: Int[Tensor, "batch seq"] | list[str] | None = None,
    hook: str | None = None,
    batch_size: int = 32,
    drop_bos: bool = True,
    outlier_factor: float | None = 10.0,
    out_dir: str | os.PathLike | None = None,
    shard_tokens: int = 65536,
    progress: bool = True,
    device: str | None = None,
    attention_mask: Int[Tensor, "batch seq"] | None = None,
    pad_token_id: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    keep_checkpoint: bool = True,
    texts=None,
) -> ActivationSet:
    """Run the same tokens through every checkpoint and keep the activations at ``hook``, paired by token.

    Row i of every checkpoint comes from the same token (``token_ids[i]``). Padding (``attention_mask``
    zeros or ``pad_token_id``) and, with ``drop_bos``, the first real position of each sequence are dropped
    (whether or not it holds a BOS token: the first position is an attention sink with outlying norms),
    then every token whose activation norm exceeds ``outlier_factor`` times the median norm in *any*
    checkpoint is dropped from all of them. The counts are in ``meta``: ``n_dropped_pad``,
    ``n_dropped_first`` (first positions), ``n_dropped_bos`` (those of them that hold the BOS token id of
    the checkpoint's tokenizer, ``bos_token_id``; 0 when no tokenizer says which id that is),
    ``n_dropped_outlier``. ``sequence_ids`` records which row of ``tokens`` each kept token came from, so
    that ``ActivationSet.split`` keeps sequences whole. The forward pass stops after the hook's block.

    ``models`` maps names to anything ``load_model`` takes; all are loaded before the first forward pass
    and checked with ``check_compatible``. ``hook`` defaults to the middle layer's residual stream.

    ``texts`` gives text instead: a path (``.txt``, ``.jsonl``, ``.parquet``, a ``datasets`` folder), a list
    of strings (also as ``tokens``) or a ``featdiff.TextCorpus`` (text field, context length, BOS, packing,
    ``max_tokens``), tokenized with the tokenizer of the checkpoint named "base" (else the first), which every
    checkpoint must share. It is read a chunk at a time, once to check it and once per checkpoint: only the
    kept token ids are held (docs/cli.md, "Text input"); ``meta["text"]`` has its settings and counts. With ``out_dir`` the
    activations stream to disk as shards (the ``ActivationSet.save`` format) and the returned set stays there
    (an ``OnDiskActivationSet``, read chunk by chunk; ``ActivationSet.load(out_dir)`` reads it into memory).

    ``checkpoint_dir`` makes the collection resumable: every ``checkpoint_every`` batches of sequences (and
    at each checkpoint's last batch) the rows collected so far are saved there (``featdiff.core.runstate.
    RowChunks``); the same call after a kill reads them back and runs only the batches that are missing.
    ``keep_checkpoint=False`` removes featdiff's checkpoint files after success.

    Examples
    --------
    >>> import torch
    >>> from transformer_lens import HookedTransformer
    >>> cfg = dict(n_layers=2, d_model=8, n_ctx=16, d_head=4, d_vocab=20, act_fn="relu", seed=0)
    >>> models = {"base": HookedTransformer(cfg), "rl": HookedTransformer(cfg)}
    >>> tokens = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(0))
    >>> acts = collect_activations(models, tokens, "blocks.0.hook_resid_post", outlier_factor=None, progress=False)
    >>> acts.names, acts.n_tokens, acts.d_model, acts.meta["n_dropped_first"], acts.meta["n_dropped_bos"]
    (['base', 'rl'], 15, 8, 3, 0)
    >>> acts.sequence_ids.tolist()[:6]
    [0, 0, 0, 0, 0, 1]
    >>> torch.equal(acts.token_ids, tokens[:, 1:].reshape(-1))  # row i of every checkpoint: token_ids[i]
    True
    """


    if not isinstance(models, Mapping) or not models:
        raise FeatdiffError(
            "collect_activations needs a non-empty dict {checkpoint name: model or checkpoint}."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise FeatdiffError(f"batch_size must be a positive int; got {batch_size!r}.")
    if isinstance(shard_tokens, bool) or not isinstance(shard_tokens, int) or shard_tokens <= 0:
        raise FeatdiffError(f"shard_tokens must be a positive int; got {shard_tokens!r}.")
    if outlier_factor is not None and not outlier_factor > 1:
        raise FeatdiffError(
            f"outlier_factor must be > 1 (a multiple of the median norm) or None to keep all; got {outlier_factor}."
        )
    data = as_data(tokens, texts)
    loaded = {str(name): load_model(spec, device=device) for name, spec in models.items()}
    hook = default_hook(next(iter(loaded.values()))) if hook is None else hook
    check_compatible(loaded, hook)
    d_vocab = next(iter(loaded.values())).cfg.d_vocab
    if is_text(data):
        source: TextWindows | TensorWindows = text_windows(data, loaded)
        seq_len = source.context_length
    else:
        ids_all, mask_all = _prepare_tokens(data, loaded, attention_mask, pad_token_id)
        seq_len = ids_all.shape[1]
        for name, model in loaded.items():
            if seq_len > model.cfg.n_ctx:
                raise FeatdiffError(
                    f"Sequences have {seq_len} tokens but checkpoint {name!r} takes at most n_ctx={model.cfg.n_ctx}; "
                    "cut them shorter."
                )
        real = ids_all[mask_all]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= d_vocab):
            raise FeatdiffError(
                f"tokens hold ids in [{int(real.min())}, {int(real.max())}] but the vocabulary has d_vocab={d_vocab} "
                "ids; were the tokens made with another tokenizer?"
            )
        source = TensorWindows(ids_all, mask_all)
    bos_id = _bos_token_id(loaded)
    # one pass before any forward pass (for text: reading and tokenizing the corpus): the kept ids, counts, checks
    found = scan(source, batch_size, drop_bos, bos_id, d_vocab, progress)
    flat_ids, flat_seq, n_batches = found.token_ids, found.sequence_ids, found.n_batches
    n_dropped_pad, n_dropped_first, n_dropped_bos = found.n_dropped_pad, found.n_dropped_first, found.n_dropped_bos
    if not len(flat_ids):
        raise FeatdiffError(
            f"No token is left after dropping {n_dropped_pad} padding positions and the first position of "
            f"each of {n_dropped_first} sequences; pass longer sequences or drop_bos=False."
        )
    chunks_ckpt = None
    if checkpoint_dir is not None:
        if isinstance(source, TensorWindows):
            found.fingerprint = {"tokens": tensor_hash(source.tokens), "mask": tensor_hash(source.mask)}
        settings = {
            "names": list(loaded), "hook": hook, "batch_size": batch_size, **found.fingerprint,
            "models": {n: model_fingerprint(m) for n, m in loaded.items()},
        }
        chunks_ckpt = RowChunks(
            checkpoint_dir, "collect_activations", settings, checkpoint_every, len(loaded), n_batches
        )

    def model_rows(m_index: int, name: str, model) -> Iterator[Tensor]:
        def compute(b0: int) -> Iterator[Tensor]:
            batches = with_keep(source.batches(batch_size, start=b0), drop_bos)
            return _model_rows(name, model, batches, hook, first_seq=b0 * batch_size)

        return compute(0) if chunks_ckpt is None else chunks_ckpt.rows(m_index, compute)

    out_dir = None if out_dir is None else Path(out_dir)
    with contextlib.nullcontext() if out_dir is None else atomic_dir(out_dir) as tmp:
        raw: dict[str, Tensor] = {}  # in memory: the kept rows of each checkpoint
        raw_writers: dict[str, _ShardWriter] = {}  # streaming: the same rows, in shards under tmp/_raw
        norms: dict[str, Tensor] = {}
        bar = progress_bar(
            total=n_batches * len(loaded), desc=f"collect {hook}", unit="batch", disable=not progress
        )
        for m_index, (name, model) in enumerate(loaded.items()):
            if tmp is not None:
                template = f"m{m_index}_{{index:05d}}.st"
                raw_writers[name] = _ShardWriter(tmp / "_raw", [name], shard_tokens, template)
            chunks, chunk_norms = [], []
            for x in model_rows(m_index, name, model):
                chunk_norms.append(x.norm(dim=1))
                if tmp is None:
                    chunks.append(x)
                else:
                    raw_writers[name].add({name: x})
                bar.update(1)
            norms[name] = torch.cat(chunk_norms)
            if len(norms[name]) != len(flat_ids):
                raise FeatdiffError(
                    f"Checkpoint {name!r} gave {len(norms[name])} rows for {len(flat_ids)} kept tokens: the data "
                    "changed while it was read (a corpus file written to during the run?); run again."
                )
            if tmp is None:
                raw[name] = torch.cat(chunks)
            else:
                raw_writers[name].close()
        bar.close()

        outlier, n_outlier_by_checkpoint, median_norm = _outliers(norms, outlier_factor)
        n_dropped_outlier = int(outlier.sum())
        kept = ~outlier
        if not kept.any():
            raise FeatdiffError("Every token was dropped as an outlier; raise outlier_factor or pass None.")
        token_ids = flat_ids[kept]
        sequence_ids = flat_seq[kept]
        meta = {
            "n_sequences": found.n_sequences,
            "seq_len": seq_len,
            "n_dropped_pad": n_dropped_pad,
            "n_dropped_first": n_dropped_first,
            "n_dropped_bos": n_dropped_bos,
            "bos_token_id": bos_id,
            "n_dropped_outlier": n_dropped_outlier,
            "n_outlier_by_checkpoint": n_outlier_by_checkpoint,
            "median_norm": median_norm,
            "outlier_factor": outlier_factor,
            "drop_bos": drop_bos,
        }
        if is_text(data):
            meta["text"] = {**data.describe(), **source.stats}
        if progress and (n_dropped_outlier or n_dropped_first or n_dropped_pad):
            tqdm.write(_dropped_message(int(kept.sum()), meta))
        if chunks_ckpt is not None and not keep_checkpoint:
            chunks_ckpt.clear()
        if tmp is None:
            return ActivationSet(
                {n: x[kept] for n, x in raw.items()},
                hook=hook,
                token_ids=token_ids,
                meta=meta,
                sequence_ids=sequence_ids,
            )

        # Second pass over the raw shards: drop the outliers, write the final shards.
        names = list(loaded)
        writer = _ShardWriter(tmp, names, shard_tokens)
        start = 0
        for i in range(raw_writers[names[0]].n_shards):
            part = {n: load_file(str(tmp / "_raw" / f"m{k}_{i:05d}.st"))[n] for k, n in enumerate(names)}
            n_rows = part[names[0]].shape[0]
            sel = kept[start : start + n_rows]
            writer.add(
                {n: x[sel] for n, x in part.items()},
                flat_ids[start : start + n_rows][sel],
                flat_seq[start : start + n_rows][sel],
            )
            start += n_rows
        n_shards = writer.close()
        shutil.rmtree(tmp / "_raw")
        write_json(
            tmp / constants.ACTS_META,
            _meta_json(names, hook, writer.n_tokens, int(part[names[0]].shape[1]), n_shards, meta),
        )
    return ActivationSet.open(out_dir)
