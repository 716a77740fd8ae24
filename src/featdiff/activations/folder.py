"""The folder of an activation set: ``meta.json`` and safetensors shards of exactly ``shard_tokens`` rows
(``ActivationSet.save``, ``collect_activations(..., out_dir=...)``, ``ActivationStream.save``, ``from_sae_lens_cache``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from featdiff import constants
from featdiff._version import __version__
from featdiff.errors import FeatdiffError

TOKEN_IDS = "__token_ids__"  # key of the token ids in a shard
SEQUENCE_IDS = "__sequence_ids__"  # key of the sequence ids (which input row each token came from)


def read_meta(path: Path) -> tuple[dict, int, int]:
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


def meta_json(
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


class ShardWriter:
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
            tensors[TOKEN_IDS], self._tids = take(self._tids)
        if self._sids:
            tensors[SEQUENCE_IDS], self._sids = take(self._sids)
        save_file(tensors, str(self.folder / self.template.format(index=self.n_shards)))
        self.n_shards += 1
        self.n_tokens += n
        self._n_buf -= n

    def close(self) -> int:
        if self._n_buf:
            self._flush(self._n_buf)
        return self.n_shards


# ----------------------------------------------------------------------------------- collect_activations
