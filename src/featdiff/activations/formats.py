"""Other libraries' cached activations as an on-disk ActivationSet: sae-lens's ``CacheActivationsRunner``
folders (a HuggingFace ``datasets`` folder per checkpoint: one row per sequence, a column named after the
hook holding (context_size, d_in) activations, and ``token_ids``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from featdiff import constants
from featdiff.activations.activations import ActivationSet, OnDiskActivationSet
from featdiff.activations.folder import ShardWriter, meta_json
from featdiff.core.config import check_int
from featdiff.core.io import atomic_dir, write_json
from featdiff.errors import FeatdiffError


def from_sae_lens_cache(
    paths: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    drop_bos: bool = False,
    shard_tokens: int = 65536,
    progress: bool = True,
) -> OnDiskActivationSet:
    """Pair sae-lens cached-activation folders ``{checkpoint: folder}`` (one ``CacheActivationsRunner``
    output per checkpoint, made from the same token sequences) into an on-disk ActivationSet at ``out_dir``.

    The folders are read sequence chunk by sequence chunk (``datasets`` memory-maps them) and written as
    featdiff shards; nothing is held whole. Row j of sequence i of every folder must come from the same
    token: where the folders hold ``token_ids`` they must agree. ``sequence_ids`` are the row numbers, so
    ``split`` keeps sequences whole; ``drop_bos`` drops the first position of each sequence (sae-lens keeps
    it). Returns ``ActivationSet.open(out_dir)``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from datasets import Array2D, Dataset, Features, Sequence, Value
    >>> feats = Features({"blocks.0.hook_resid_post": Array2D(shape=(4, 3), dtype="float32"),
    ...                   "token_ids": Sequence(Value(dtype="int32"), length=4)})
    >>> tmp = tempfile.mkdtemp()
    >>> for name in ("base", "rl"):
    ...     Dataset.from_dict({"blocks.0.hook_resid_post": torch.randn(2, 4, 3).numpy(),
    ...                        "token_ids": [[1, 2, 3, 4], [5, 6, 7, 8]]},
    ...                       features=feats).save_to_disk(f"{tmp}/{name}")
    >>> acts = from_sae_lens_cache({"base": f"{tmp}/base", "rl": f"{tmp}/rl"}, f"{tmp}/acts", progress=False)
    >>> acts.names, acts.n_tokens, acts.d_model, acts.hook, acts.sequence_ids.tolist()
    (['base', 'rl'], 8, 3, 'blocks.0.hook_resid_post', [0, 0, 0, 0, 1, 1, 1, 1])
    """
    from datasets import load_from_disk  # deferred: datasets is heavy and only this reader needs it
    from tqdm.auto import tqdm

    if not isinstance(paths, Mapping) or not paths:
        raise FeatdiffError("from_sae_lens_cache needs a non-empty dict {checkpoint name: cache folder}.")
    check_int("from_sae_lens_cache", "shard_tokens", shard_tokens)
    sets, hooks = {}, {}
    for name, p in paths.items():
        try:
            ds = load_from_disk(str(p))
        except Exception as e:
            raise FeatdiffError(
                f"Cannot read the sae-lens activation cache of {name!r} at {p} ({type(e).__name__}: {e}); "
                "pass the output_dir of a CacheActivationsRunner."
            ) from None
        acts_cols = [c for c in ds.column_names if c != "token_ids"]
        if len(acts_cols) != 1:
            raise FeatdiffError(
                f"The cache of {name!r} at {p} must hold one activation column besides token_ids; got {ds.column_names}."
            )
        sets[str(name)], hooks[str(name)] = ds.with_format("torch"), acts_cols[0]
    if len(set(hooks.values())) != 1:
        raise FeatdiffError(f"The caches were made at different hooks: {hooks}; pair caches of one hook.")
    hook = next(iter(hooks.values()))
    lengths = {n: len(ds) for n, ds in sets.items()}
    if len(set(lengths.values())) != 1:
        raise FeatdiffError(
            f"The caches hold different numbers of sequences: {lengths}; they must be paired."
        )
    names, n_seq = list(sets), next(iter(lengths.values()))
    first = sets[names[0]][0][hook]
    ctx, d_in = first.shape
    step = max(1, shard_tokens // ctx)
    keep = slice(1 if drop_bos else 0, None)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        writer = ShardWriter(tmp, names, shard_tokens)
        for a in tqdm(range(0, n_seq, step), desc="sae-lens cache", disable=not progress):
            b = min(a + step, n_seq)
            rows = {n: ds[a:b] for n, ds in sets.items()}
            tids = [r["token_ids"][:, keep] for r in rows.values() if "token_ids" in r]
            for t in tids[1:]:
                if not torch.equal(t, tids[0]):
                    raise FeatdiffError(
                        f"The caches hold different token_ids in sequences {a}..{b - 1}: they were not made from the "
                        "same tokens in the same order, so their activations cannot be paired."
                    )
            acts = {n: r[hook][:, keep].reshape(-1, d_in).float() for n, r in rows.items()}
            seqs = torch.arange(a, b).repeat_interleave(acts[names[0]].shape[0] // (b - a))
            writer.add(acts, tids[0].reshape(-1).long() if tids else None, seqs)
        n_shards = writer.close()
        meta = {
            "source": "sae_lens_cache",
            "paths": {n: str(p) for n, p in paths.items()},
            "drop_bos": drop_bos,
        }
        write_json(
            tmp / constants.ACTS_META, meta_json(names, hook, writer.n_tokens, int(d_in), n_shards, meta)
        )
    return ActivationSet.open(out_dir)
