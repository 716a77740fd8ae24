"""collect_activations: the same tokens through every checkpoint, row i of every model from the same token,
in memory or written as shards."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from featdiff import constants
from featdiff.activations.activations import ActivationSet
from featdiff.activations.capture import model_rows, outliers
from featdiff.activations.folder import ShardWriter, meta_json
from featdiff.activations.tokens import (
    TensorWindows,
    TextWindows,
    as_data,
    is_text,
    prepare_tokens,
    scan,
    text_windows,
    with_keep,
)
from featdiff.core.config import check_int
from featdiff.core.io import atomic_dir, write_json
from featdiff.core.output import progress_bar
from featdiff.core.runstate import RowChunks, model_fingerprint, tensor_hash
from featdiff.errors import FeatdiffError
from featdiff.models.hooks import check_compatible, default_hook
from featdiff.models.load import load_model

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


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
    kept token ids are held (docs/cli.md, "Text input"); ``meta["text"]`` has its settings and counts.
    With ``out_dir`` the
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
    >>> acts = collect_activations(models, tokens, "blocks.0.hook_resid_post", outlier_factor=None,
    ...                            progress=False)
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
    check_int("collect_activations", "batch_size", batch_size)
    check_int("collect_activations", "shard_tokens", shard_tokens)
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
        ids_all, mask_all = prepare_tokens(data, loaded, attention_mask, pad_token_id)
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

    def rows_of(m_index: int, name: str, model) -> Iterator[Tensor]:
        def compute(b0: int) -> Iterator[Tensor]:
            batches = with_keep(source.batches(batch_size, start=b0), drop_bos)
            return model_rows(name, model, batches, hook, first_seq=b0 * batch_size)

        return compute(0) if chunks_ckpt is None else chunks_ckpt.rows(m_index, compute)

    out_dir = None if out_dir is None else Path(out_dir)
    with contextlib.nullcontext() if out_dir is None else atomic_dir(out_dir) as tmp:
        raw: dict[str, Tensor] = {}  # in memory: the kept rows of each checkpoint
        raw_writers: dict[str, ShardWriter] = {}  # streaming: the same rows, in shards under tmp/_raw
        norms: dict[str, Tensor] = {}
        bar = progress_bar(
            total=n_batches * len(loaded), desc=f"collect {hook}", unit="batch", disable=not progress
        )
        for m_index, (name, model) in enumerate(loaded.items()):
            if tmp is not None:
                template = f"m{m_index}_{{index:05d}}.st"
                raw_writers[name] = ShardWriter(tmp / "_raw", [name], shard_tokens, template)
            chunks, chunk_norms = [], []
            for x in rows_of(m_index, name, model):
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

        outlier, n_outlier_by_checkpoint, median_norm = outliers(norms, outlier_factor)
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
        writer = ShardWriter(tmp, names, shard_tokens)
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
            meta_json(names, hook, writer.n_tokens, int(part[names[0]].shape[1]), n_shards, meta),
        )
    return ActivationSet.open(out_dir)
