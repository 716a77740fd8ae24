"""Paired activations produced by the models as training consumes them, never stored (like sae-lens's
ActivationsStore): for runs larger than the disk."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff import constants
from featdiff.activations.activations import ActivationSet
from featdiff.activations.capture import model_rows
from featdiff.activations.folder import ShardWriter, meta_json
from featdiff.activations.tokens import prepare_tokens
from featdiff.core.config import check_int
from featdiff.core.io import atomic_dir, write_json
from featdiff.errors import FeatdiffError
from featdiff.models.hooks import check_compatible, default_hook
from featdiff.models.load import load_model


class ActivationStream(ActivationSet):
    """Paired activations of several checkpoints at one hook, computed batch by batch from the models and
    never stored: each ``batches()`` pass runs the models again on the token sequences (in a seeded random
    order when shuffled) and mixes their rows in a buffer of ``buffer_tokens`` rows before cutting batches.

    ``train_saes`` and ``train_crosscoder`` take it where they take an ActivationSet. It keeps the rows
    ``collect_activations`` keeps: padding and (``drop_bos``) the first position of each sequence are
    dropped; with ``outlier_factor`` a row whose norm exceeds that multiple of the median norm in any
    checkpoint is dropped too, the medians being measured once on the first ``batch_size`` sequences (so
    ``n_tokens``, counted before that filter, is then an upper bound). Unshuffled, without outlier
    filtering, its batches are those of ``collect_activations(...).batches(shuffle=False)``.
    Nothing is held but the models and the buffer: ``acts[name]`` and ``column`` raise (collect evaluation
    activations with ``collect_activations``); ``save`` writes what it streams.

    Examples
    --------
    >>> import torch
    >>> from transformer_lens import HookedTransformer
    >>> cfg = dict(n_layers=2, d_model=8, n_ctx=16, d_head=4, d_vocab=20, act_fn="relu", seed=0)
    >>> models = {"base": HookedTransformer(cfg), "rl": HookedTransformer(cfg)}
    >>> tokens = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(0))
    >>> stream = ActivationStream(models, tokens, "blocks.0.hook_resid_post")
    >>> stream.n_tokens, stream.d_model, [b["rl"].shape[0] for b in stream.batches(8, shuffle=False)]
    (15, 8, [8, 7])
    """

    def __init__(
        self,
        models: Mapping[str, object],
        tokens: Int[Tensor, "batch seq"] | list[str],
        hook: str | None = None,
        batch_size: int = 32,
        drop_bos: bool = True,
        outlier_factor: float | None = None,
        device: str | None = None,
        attention_mask: Int[Tensor, "batch seq"] | None = None,
        pad_token_id: int | None = None,
        buffer_tokens: int | None = None,
    ):
        if not isinstance(models, Mapping) or not models:
            raise FeatdiffError(
                "ActivationStream needs a non-empty dict {checkpoint name: model or checkpoint}."
            )
        check_int("ActivationStream", "batch_size", batch_size)  # sequences per forward pass
        if outlier_factor is not None and not outlier_factor > 1:
            raise FeatdiffError(f"outlier_factor must be > 1 or None; got {outlier_factor}.")
        check_int("ActivationStream", "buffer_tokens", buffer_tokens, optional=True)
        self.models = {str(n): load_model(spec, device=device) for n, spec in models.items()}
        self.hook = default_hook(next(iter(self.models.values()))) if hook is None else hook
        check_compatible(self.models, self.hook)
        self.tokens, mask = prepare_tokens(tokens, self.models, attention_mask, pad_token_id)
        self.keep = mask.clone()
        if drop_bos:
            rows = torch.nonzero(mask.any(dim=1)).squeeze(1)
            self.keep[rows, mask.int().argmax(dim=1)[rows]] = False
        if not self.keep.any():
            raise FeatdiffError(
                "No token is left after dropping padding and first positions; pass longer sequences."
            )
        self.fwd_tokens, self.mask = self.tokens.masked_fill(~mask, 0), mask
        self.batch_size, self.buffer_tokens, self.outlier_factor = batch_size, buffer_tokens, outlier_factor
        self._names, self._limit = list(self.models), None
        self.token_ids = self.sequence_ids = None
        self.meta = {
            "n_sequences": self.tokens.shape[0],
            "seq_len": self.tokens.shape[1],
            "drop_bos": drop_bos,
        }
        first = self._forward(torch.arange(min(batch_size, self.tokens.shape[0])), self._names)
        self._d_model = next(iter(first.values())).shape[1]
        self.median_norm = {n: float(x.norm(dim=1).median()) for n, x in first.items()}
        self.meta.update(median_norm=self.median_norm, outlier_factor=outlier_factor)

    def _forward(self, seqs: Tensor, names: list[str]) -> dict[str, Tensor]:
        """The kept rows of sequences ``seqs`` through each model in ``names`` (outliers dropped)."""
        tok, mask, keep = self.fwd_tokens[seqs], self.mask[seqs], self.keep[seqs]
        bs = self.batch_size

        def batches():
            return ((tok[s : s + bs], mask[s : s + bs], keep[s : s + bs]) for s in range(0, len(tok), bs))

        out = {n: torch.cat(list(model_rows(n, self.models[n], batches(), self.hook))) for n in names}
        if self.outlier_factor is not None and getattr(self, "median_norm", None):
            bad = torch.zeros(len(next(iter(out.values()))), dtype=torch.bool)
            for n, x in out.items():
                bad |= x.norm(dim=1) > self.outlier_factor * self.median_norm[n]
            out = {n: x[~bad] for n, x in out.items()}
        return out

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def acts(self) -> Mapping[str, Tensor]:  # type: ignore[override]
        raise FeatdiffError(
            "An ActivationStream stores no activations; collect them with collect_activations."
        )

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def n_tokens(self) -> int:
        n = int(self.keep.sum())
        return n if self._limit is None else min(n, self._limit)

    @property
    def d_model(self) -> int:
        return self._d_model

    d_in = d_model

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __repr__(self) -> str:
        return f"ActivationStream(names={self.names}, n_tokens={self.n_tokens}, d_model={self.d_model}, hook={self.hook!r})"

    def __getitem__(self, name: str) -> Tensor:
        raise FeatdiffError(
            f"An ActivationStream holds no activations to index (acts[{name!r}]); use batches(), or collect them "
            "with collect_activations(..., out_dir=...)."
        )

    column = __getitem__

    def _copy(self, names: list[str], limit: int | None) -> ActivationStream:
        out = object.__new__(ActivationStream)
        out.__dict__.update(self.__dict__)
        out._names, out._limit, out.meta = list(names), limit, dict(self.meta)
        return out

    def select(self, names: list[str]) -> ActivationStream:
        missing = [n for n in names if n not in self._names]
        if missing:
            raise FeatdiffError(f"No checkpoints {missing} in this ActivationStream; it has {self.names}.")
        return self._copy(names, self._limit)

    def subset(self, index) -> ActivationStream:
        """Only a leading slice ``slice(0, k)`` (the first k tokens of an unshuffled pass) is supported."""
        if not (isinstance(index, slice) and (index.start or 0) == 0 and index.step in (None, 1)):
            raise FeatdiffError(
                "ActivationStream.subset takes only slice(0, k); collect the activations to index them."
            )
        return self._copy(self._names, index.stop if self._limit is None else min(index.stop, self._limit))

    def split(self, fraction: float = 0.2, seed: int = 0):
        raise FeatdiffError(
            "An ActivationStream cannot be split; split the token sequences and make two streams."
        )

    def row_norm_mean(self, name: str) -> float:
        total, n = 0.0, 0
        for b in self.batches(1 << 16, shuffle=False, names=[name]):
            total += float(b[name].norm(dim=1).double().sum())
            n += len(b[name])
        return total / max(n, 1)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        names: list[str] | None = None,
        buffer_tokens: int | None = None,
    ) -> Iterator[dict[str, Float[Tensor, "batch d_in"]]]:
        """One pass: the models run on the sequences (a seeded random order when ``shuffle``), their rows
        mixed in a buffer of ``buffer_tokens`` rows (default: the stream's, else about 256 MiB)."""
        if batch_size <= 0:
            raise FeatdiffError(f"batch_size must be positive; got {batch_size}.")
        names = self.names if names is None else list(names)
        self.select(names)
        buf = buffer_tokens or self.buffer_tokens or max(1024, (1 << 28) // (4 * self.d_model * len(names)))
        buf = max(buf, batch_size)
        g = torch.Generator().manual_seed(seed)
        n_seq = self.tokens.shape[0]
        order = torch.randperm(n_seq, generator=g) if shuffle else torch.arange(n_seq)
        left = self.n_tokens
        parts: list[dict[str, Tensor]] = []
        n_buf = 0

        def drain(final: bool) -> Iterator[dict[str, Tensor]]:
            nonlocal parts, n_buf
            block = {n: torch.cat([p[n] for p in parts]) for n in names}
            perm = torch.randperm(n_buf, generator=g) if shuffle else torch.arange(n_buf)
            full = n_buf if final else (n_buf // batch_size) * batch_size
            for start in range(0, full, batch_size):
                idx = perm[start : min(start + batch_size, full)]
                yield {n: x[idx] for n, x in block.items()}
            parts = [{n: x[perm[full:]] for n, x in block.items()}] if full < n_buf else []
            n_buf -= full

        for start in range(0, n_seq, self.batch_size):
            if left <= 0:
                break
            rows = self._forward(order[start : start + self.batch_size], names)
            rows = {n: x[:left] for n, x in rows.items()}
            left -= len(rows[names[0]])
            parts.append(rows)
            n_buf += len(rows[names[0]])
            if n_buf >= buf:
                yield from drain(final=False)
        if n_buf:
            yield from drain(final=True)

    def save(self, path: str | os.PathLike, shard_tokens: int = 65536) -> Path:
        """Write one unshuffled pass to a folder of shards (the ``ActivationSet.save`` format)."""
        if shard_tokens <= 0:
            raise FeatdiffError(f"shard_tokens must be positive; got {shard_tokens}.")
        path = Path(path)
        with atomic_dir(path) as tmp:
            writer = ShardWriter(tmp, self.names, shard_tokens)
            for b in self.batches(shard_tokens, shuffle=False):
                writer.add(b)
            n_shards = writer.close()
            meta = meta_json(self.names, self.hook, writer.n_tokens, self.d_model, n_shards, self.meta)
            write_json(tmp / constants.ACTS_META, meta)
        return path
