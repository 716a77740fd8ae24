"""Paired activations: the same tokens through every checkpoint, row i of every model from the same token,
held in memory (ActivationSet) or left in their shards on disk (OnDiskActivationSet)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file
from torch import Tensor

from featdiff import constants
from featdiff.activations.folder import SEQUENCE_IDS, TOKEN_IDS, ShardWriter, meta_json, read_meta
from featdiff.activations.shards import ActivationColumn, ShardStore, compose_rows, view_batches
from featdiff.core.config import check_int
from featdiff.core.io import atomic_dir, write_json
from featdiff.errors import FeatdiffError, warn


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
        >>> acts = ActivationSet.from_tensors({"base": torch.randn(12, 2)},
        ...                                   sequence_ids=torch.arange(12) // 3)
        >>> train, held = acts.split(0.25, seed=0)
        >>> set(train.sequence_ids.tolist()) & set(held.sequence_ids.tolist()), held.n_tokens
        (set(), 3)
        """

        if not 0 < fraction < 1:
            raise FeatdiffError(f"split fraction must be in (0, 1); got {fraction}.")
        g = torch.Generator().manual_seed(seed)
        seqs = None if self.sequence_ids is None else torch.unique(self.sequence_ids)
        if seqs is None or len(seqs) < 2:
            why = "has no sequence ids" if seqs is None else "holds a single sequence"
            warn(
                f"ActivationSet.split: the set {why}, so tokens are split one by one and a sequence may have "
                "tokens in both the training and the held-out part (held-out numbers come out optimistic). "
                "Pass sequence_ids= to ActivationSet.from_tensors, or collect with collect_activations.",
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
            writer = ShardWriter(tmp, self.names, shard_tokens)
            writer.add(self.acts, self.token_ids, self.sequence_ids)
            n_shards = writer.close()
            write_json(tmp / constants.ACTS_META, self._meta_json(n_shards))
        return path

    def _meta_json(self, n_shards: int) -> dict:
        return meta_json(self.names, self.hook, self.n_tokens, self.d_model, n_shards, self.meta)

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
        meta, n_shards, n_tokens = read_meta(path)
        files = [path / constants.ACTS_SHARD.format(index=i) for i in range(n_shards)]
        return OnDiskActivationSet._from_files(files, meta, n_tokens, buffer_tokens)

    @classmethod
    def load(cls, path: str | os.PathLike, in_memory: bool = True) -> ActivationSet:
        """Read a folder written by ``save`` or by ``collect_activations(..., out_dir=...)`` into memory;
        ``in_memory=False`` leaves it on disk (``ActivationSet.open``)."""
        if not in_memory:
            return cls.open(path)
        path = Path(path)
        meta, n_shards, n_tokens = read_meta(path)
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
            if TOKEN_IDS in tensors:
                tids.append(tensors[TOKEN_IDS])
            if SEQUENCE_IDS in tensors:
                sids.append(tensors[SEQUENCE_IDS])
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
    (``featdiff.activations.shards.view_batches``): where the view fits in the buffer the batches equal
    an in-memory
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
        check_int("OnDiskActivationSet", "buffer_tokens", buffer_tokens, optional=True)
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
                    if TOKEN_IDS in keys:
                        tids.append(f.get_tensor(TOKEN_IDS))
                    if SEQUENCE_IDS in keys:
                        sids.append(f.get_tensor(SEQUENCE_IDS))
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
            writer = ShardWriter(tmp, self.names, shard_tokens)
            for start in range(0, self.n_tokens, shard_tokens):
                sl = slice(start, start + shard_tokens)
                writer.add(
                    {n: self.column(n).read(start, start + shard_tokens) for n in self.names},
                    None if self.token_ids is None else self.token_ids[sl],
                    None if self.sequence_ids is None else self.sequence_ids[sl],
                )
            write_json(tmp / constants.ACTS_META, self._meta_json(writer.close()))
        return path
