"""Tokens in: collect_activations' input as token windows (tensors of ids, or text tokenized by the base
checkpoint's tokenizer), the checks that every checkpoint tokenizes alike, and the positions kept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from featdiff.activations.corpus import N_PROBE_DOCUMENTS, PROBE, TextCorpus, as_corpus
from featdiff.errors import FeatdiffError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


# ----------------------------------------------------------------------------------------- tokenizers


def _where(name: str, model) -> str:
    path = getattr(model, "featdiff_path", None)
    return f"{name!r}" + (f" ({path})" if path else "")


def _tokenizer_difference(a, b, probe: list[str]) -> str | None:
    """What differs between two tokenizers (vocabulary, special tokens, the encoding of ``probe``), or None."""
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        only_a = sorted(set(va) - set(vb))[:3]
        moved = sorted(k for k in set(va) & set(vb) if va[k] != vb[k])[:3]
        detail = f"; e.g. {only_a} only in the first" if only_a else (f"; e.g. {moved} have other ids" if moved else "")
        return f"vocabularies of {len(va):,} and {len(vb):,} tokens differ{detail}"
    for attr in ("bos_token_id", "eos_token_id"):
        if getattr(a, attr) != getattr(b, attr):
            return f"{attr} {getattr(a, attr)} vs {getattr(b, attr)}"
    for text in probe:
        ea = a(text, add_special_tokens=False, verbose=False)["input_ids"]
        eb = b(text, add_special_tokens=False, verbose=False)["input_ids"]
        if ea != eb:
            return f"{text[:40]!r} encodes as {ea[:8]}... vs {eb[:8]}..."
    return None


def check_tokenizers(models: Mapping[str, Any], reference: str, corpus: TextCorpus | None = None) -> None:
    """Raise FeatdiffError unless every checkpoint has a tokenizer and all encode text as ``reference``'s
    does (same vocabulary, same BOS/EOS ids, same ids for a probe text and the corpus's first documents)."""
    missing = [n for n, m in models.items() if getattr(m, "tokenizer", None) is None]
    if missing:
        names = ", ".join(_where(n, models[n]) for n in missing)
        raise FeatdiffError(
            f"Text input needs each checkpoint's tokenizer, and checkpoint {names} has none: save the tokenizer "
            "into the checkpoint folder (copy the base's tokenizer files there, or tokenizer.save_pretrained), "
            "or give token ids (tokens=) instead of text."
        )
    probe = [PROBE]
    if corpus is not None:
        for i, doc in enumerate(corpus.documents()):
            if i >= N_PROBE_DOCUMENTS:
                break
            probe.append(doc[:2000])
    ref = models[reference].tokenizer
    for name, model in models.items():
        if name == reference:
            continue
        diff = _tokenizer_difference(ref, model.tokenizer, probe)
        if diff is not None:
            raise FeatdiffError(
                f"Checkpoints {_where(reference, models[reference])} and {_where(name, model)} have different "
                f"tokenizers ({diff}). Activations are paired token by token, so every checkpoint must share the "
                f"{reference} checkpoint's tokenizer: compare fine-tunes of the same base, or give token ids "
                "(tokens=) instead of text."
            )


class TextWindows:
    """A corpus tokenized with one checkpoint's tokenizer, served as batches of windows, as many times as
    asked (each pass reads the corpus again: it is never held in memory). ``collect_activations`` makes one
    from ``texts=``; ``stats`` holds the counts of the last full pass."""

    def __init__(self, corpus: TextCorpus, tokenizer, context_length: int):
        self.corpus, self.tokenizer, self.context_length = corpus, tokenizer, context_length
        self.stats: dict = {}

    def batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches from batch ``start`` on (the earlier ones are read and tokenized, not returned)."""
        stats: dict = {}
        for b, batch in enumerate(self.corpus.windows(self.tokenizer, self.context_length, batch_size, stats)):
            if b >= start:
                yield batch
        self.stats = stats

    def materialize(self, batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """All windows in memory: ids (n_windows, longest window) right-padded with 0, and the mask."""
        parts = list(self.batches(batch_size))
        width = max(ids.shape[1] for ids, _ in parts)
        ids = torch.cat([torch.nn.functional.pad(i, (0, width - i.shape[1])) for i, _ in parts])
        mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for _, m in parts])
        return ids, mask


def text_windows(corpus: TextCorpus, models: Mapping[str, Any], reference: str | None = None) -> TextWindows:
    """``corpus`` tokenized with the reference checkpoint's tokenizer (``reference``, default "base" where
    there is one, else the first), after ``check_tokenizers``; the context length defaults to the smallest
    ``n_ctx`` of the checkpoints and may not exceed it."""
    reference = reference or ("base" if "base" in models else next(iter(models)))
    check_tokenizers(models, reference, corpus)
    n_ctx = min(int(m.cfg.n_ctx) for m in models.values())
    length = corpus.context_length or n_ctx
    if length > n_ctx:
        small = min(models, key=lambda n: models[n].cfg.n_ctx)
        raise FeatdiffError(
            f"context_length={length} is longer than checkpoint {small!r} takes (n_ctx={n_ctx}); pass "
            f"context_length= of at most {n_ctx}."
        )
    if length < 2:
        raise FeatdiffError(f"context_length must be at least 2 tokens; the checkpoints' n_ctx is {n_ctx}.")
    return TextWindows(corpus, models[reference].tokenizer, length)


# ---------------------------------------------------------------------------- the data of collect_activations


def is_text(data) -> bool:
    """Whether ``data`` is text (a TextCorpus, a string, or a non-empty list of strings), not token ids."""
    if isinstance(data, (str, TextCorpus)):
        return True
    return isinstance(data, Sequence) and len(data) > 0 and all(isinstance(t, str) for t in data)


def as_data(tokens, texts):
    """collect_activations' data: token ids as given, or text as a TextCorpus (``texts=``: a path, a list of
    strings or a TextCorpus; text given as ``tokens``: a string or a list of strings, each a document)."""
    if texts is not None:
        if tokens is not None:
            raise FeatdiffError("Give the data once: token ids (tokens=) or text (texts=), not both.")
        return as_corpus(texts)
    if tokens is None:
        raise FeatdiffError("collect_activations needs data: token ids (tokens=) or text (texts=).")
    if is_text(tokens) and not isinstance(tokens, TextCorpus):
        return TextCorpus([tokens] if isinstance(tokens, str) else list(tokens))
    return tokens


class TensorWindows:
    """Token ids in memory, served batch by batch like a ``TextWindows``."""

    def __init__(self, tokens: Tensor, mask: Tensor):
        self.tokens, self.mask = tokens, mask

    def batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        for s in range(start * batch_size, self.tokens.shape[0], batch_size):
            yield self.tokens[s : s + batch_size], self.mask[s : s + batch_size]


def kept_positions(mask: Tensor, drop_bos: bool) -> Tensor:
    """The positions collect_activations keeps: the real ones, less each sequence's first with drop_bos."""
    keep = mask.clone()
    if drop_bos:
        rows = torch.nonzero(mask.any(dim=1)).squeeze(1)
        keep[rows, mask.int().argmax(dim=1)[rows]] = False
    return keep


def with_keep(batches, drop_bos: bool) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """``(ids, mask)`` batches as ``(ids, mask, kept positions)``."""
    for ids, mask in batches:
        yield ids, mask, kept_positions(mask, drop_bos)


@dataclass
class Scan:
    """What one pass over the data found: the kept token ids and sequence ids (in collection order), the
    counts collect_activations reports, and hashes of the windows (for a resumable run's settings)."""

    token_ids: Tensor
    sequence_ids: Tensor
    n_sequences: int
    n_batches: int
    n_dropped_pad: int
    n_dropped_first: int
    n_dropped_bos: int
    fingerprint: dict


def scan(source, batch_size: int, drop_bos: bool, bos_id: int | None, d_vocab: int, progress: bool) -> Scan:
    """One pass over ``source`` (a TextWindows or TensorWindows) before any forward pass; for text it reads
    and tokenizes the whole corpus, checking every window's ids against ``d_vocab``."""
    from featdiff.core.output import progress_bar

    text = isinstance(source, TextWindows)
    ids_parts, seq_parts = [], []
    n_seq = n_batches = n_pad = n_first = n_bos = 0
    h_ids, h_mask = hashlib.sha256(), hashlib.sha256()
    bar = progress_bar(desc="read and tokenize the corpus", unit="batch", disable=not (progress and text))
    for ids, mask, keep in with_keep(source.batches(batch_size), drop_bos):
        if text:
            top = int(ids[mask].max())
            if top >= d_vocab:
                raise FeatdiffError(
                    f"The tokenizer gives token id {top} but the checkpoints' vocabulary has d_vocab={d_vocab} ids; "
                    "the tokenizer does not belong to these checkpoints."
                )
            h_ids.update(ids.numpy().tobytes())
            h_mask.update(mask.numpy().tobytes())
        n_pad += int((~mask).sum())
        if drop_bos:
            rows = torch.nonzero(mask.any(dim=1)).squeeze(1)
            n_first += len(rows)
            if bos_id is not None:
                n_bos += int((ids[rows, mask.int().argmax(dim=1)[rows]] == bos_id).sum())
        ids_parts.append(ids[keep])
        seq_parts.append((torch.arange(ids.shape[0]) + n_seq)[:, None].expand_as(ids)[keep])
        n_seq += ids.shape[0]
        n_batches += 1
        bar.update(1)
    bar.close()
    return Scan(
        torch.cat(ids_parts), torch.cat(seq_parts), n_seq, n_batches, n_pad, n_first, n_bos,
        {"tokens": h_ids.hexdigest()[:16], "mask": h_mask.hexdigest()[:16]},
    )  # fmt: skip


def prepare_tokens(
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
