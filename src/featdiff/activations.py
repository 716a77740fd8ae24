"""Paired activations: the same tokens through every checkpoint, row i of every model from the same token."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff import constants
from featdiff._io import atomic_dir, write_json
from featdiff.errors import FeatdiffError


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

    @classmethod
    def from_tensors(
        cls,
        tensors: Mapping[str, Float[Tensor, "n_tokens d_in"]],
        hook: str | None = None,
        token_ids: Int[Tensor, " n_tokens"] | None = None,
    ) -> ActivationSet:
        """Wrap activations you already have (row i of every tensor must come from the same token)."""
        return cls(dict(tensors), hook=hook, token_ids=token_ids)

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

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return f"ActivationSet(names={self.names}, n_tokens={self.n_tokens}, d_model={self.d_model}, hook={self.hook!r})"

    def select(self, names: list[str]) -> ActivationSet:
        """The same tokens for a subset (or a reordering) of the checkpoints."""
        return ActivationSet({n: self[n] for n in names}, self.hook, self.token_ids, dict(self.meta))

    def subset(self, index: Int[Tensor, " k"] | slice) -> ActivationSet:
        """The rows ``index`` of every checkpoint (pairing is kept)."""
        tid = None if self.token_ids is None else self.token_ids[index]
        return ActivationSet({n: x[index] for n, x in self.acts.items()}, self.hook, tid, dict(self.meta))

    def split(self, fraction: float = 0.2, seed: int = 0) -> tuple[ActivationSet, ActivationSet]:
        """A random (train, held-out) split of the tokens, e.g. to evaluate dictionaries on unseen rows."""
        if not 0 < fraction < 1:
            raise FeatdiffError(f"split fraction must be in (0, 1); got {fraction}.")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(self.n_tokens, generator=g)
        n_test = max(1, int(round(fraction * self.n_tokens)))
        return self.subset(perm[n_test:]), self.subset(perm[:n_test])

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
        """Write the set to a folder of safetensors shards (atomically); read it back with ``load``."""
        from safetensors.torch import save_file

        path = Path(path)
        n_shards = max(1, math.ceil(self.n_tokens / shard_tokens))
        with atomic_dir(path) as tmp:
            for i in range(n_shards):
                sl = slice(i * shard_tokens, (i + 1) * shard_tokens)
                tensors = {n: x[sl].contiguous() for n, x in self.acts.items()}
                if self.token_ids is not None:
                    tensors["__token_ids__"] = self.token_ids[sl].contiguous()
                save_file(tensors, str(tmp / constants.ACTS_SHARD.format(index=i)))
            write_json(tmp / constants.ACTS_META, self._meta_json(n_shards))
        return path

    def _meta_json(self, n_shards: int) -> dict:
        from featdiff import __version__

        return {
            "featdiff_version": __version__,
            "format_version": constants.FORMAT_VERSION,
            "names": self.names,
            "hook": self.hook,
            "n_tokens": self.n_tokens,
            "d_model": self.d_model,
            "n_shards": n_shards,
            "meta": self.meta,
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActivationSet:
        """Read a folder written by ``save`` or by ``collect_activations(..., out_dir=...)``."""
        import json

        from safetensors.torch import load_file

        path = Path(path)
        meta_file = path / constants.ACTS_META
        if not meta_file.is_file():
            raise FeatdiffError(
                f"{path} is not an ActivationSet folder (no {constants.ACTS_META}); "
                "write one with ActivationSet.save or collect_activations(..., out_dir=...)."
            )
        meta = json.loads(meta_file.read_text())
        parts: dict[str, list[Tensor]] = {n: [] for n in meta["names"]}
        tids: list[Tensor] = []
        for i in range(meta["n_shards"]):
            shard = path / constants.ACTS_SHARD.format(index=i)
            try:
                tensors = load_file(str(shard))
            except Exception as e:  # missing or corrupted shard
                raise FeatdiffError(f"Cannot read activation shard {shard}: {e}. Re-collect the activations.") from None
            for n in parts:
                parts[n].append(tensors[n])
            if "__token_ids__" in tensors:
                tids.append(tensors["__token_ids__"])
        acts = {n: torch.cat(p) for n, p in parts.items()}
        out = cls(acts, meta.get("hook"), torch.cat(tids) if tids else None, meta.get("meta") or {})
        if out.n_tokens != meta["n_tokens"]:
            raise FeatdiffError(f"{path} holds {out.n_tokens} tokens but its metadata says {meta['n_tokens']}.")
        return out
