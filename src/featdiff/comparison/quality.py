"""Each checkpoint's SAE quality in a comparison: what sae-lens's evals and SAEBench report before anyone
trusts a feature reading, on the held-out tokens the comparison scores on.

``dictionary_quality`` measures every dictionary (the reference's, the targets', their replicas') on its
checkpoint's held-out activations (featdiff.dictionaries.quality, featdiff.metrics.quality): L0, FVE, dead
and dense shares. ``add_lm_quality`` (``compare_checkpoints``, which has the models) adds the
language-model loss with each reconstruction spliced in at the hook (featdiff.dictionaries.splice): CE loss
recovered against zero-ablation and the KL to the clean model. ``quality_columns`` puts them in the summary
(``target_<q>`` and ``reference_<q>`` on every target's row, ``_lo`` / ``_hi`` beside the sampled ones);
``cmp.meta["quality"]`` keeps one record per dictionary, replicas included (``quality_table`` reads it).
``quality_messages`` warns where a target's SAE is much worse than the reference's (DiagnosticsConfig's
``max_fve_drop`` / ``max_ce_recovered_drop``): a feature its SAE did not learn cannot be matched, so its
"novel" reading then means little.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import pandas as pd
import torch

from featdiff.activations.tokens import TensorWindows, as_data, is_text, prepare_tokens, text_windows
from featdiff.comparison.config import CompareConfig, DiagnosticsConfig
from featdiff.core.output import progress_bar
from featdiff.dictionaries.quality import quality_chunks
from featdiff.dictionaries.splice import splice_crosscoder, splice_sequences
from featdiff.errors import FeatdiffWarning
from featdiff.metrics.quality import (
    LM_QUALITY,
    QUALITY_COLUMNS,
    SAMPLED_QUALITY,
    quality_summary,
    sequence_chunks,
)

# the fve columns the scoring routes already write (reference_fve, target_fve): only their interval is added
_WRITTEN = ("fve",)


def _summary(cfg: CompareConfig, acts=None, lm=None, model=None) -> dict:
    return quality_summary(
        acts, lm, cfg.dense_threshold, cfg.interval_level, cfg.n_bootstrap, seed=0, model=model
    )


def _keys(saes: Mapping, replicas: Mapping) -> dict[str, tuple[str, object]]:
    """{record key: (checkpoint, dictionary)}: the checkpoints' own, then "<checkpoint> replica <i>"."""
    keys = {n: (n, d) for n, d in saes.items()}
    for n, reps in replicas.items():
        keys.update({f"{n} replica {i + 1}": (n, d) for i, d in enumerate(reps)})
    return keys


def dictionary_quality(saes: Mapping, replicas: Mapping, acts, cfg: CompareConfig, progress: bool = False) -> dict:
    """{key: quality record} of every SAE (``saes`` {checkpoint: SAE}, ``replicas`` {checkpoint: [SAEs]})
    on its checkpoint's activations in ``acts``: featdiff.metrics.quality's activation-only numbers
    (``l0``, ``fve``, ``dead_share``, ``dense_share``, intervals) and ``checkpoint``."""
    out = {}
    for key, (name, d) in progress_bar(list(_keys(saes, replicas).items()), desc="SAE quality", disable=not progress):
        chunks = quality_chunks(d, acts.column(name), cfg.n_token_chunks)
        out[key] = {"checkpoint": name, **_summary(cfg, chunks)}
    return out


def crosscoder_quality(cc, acts, cfg: CompareConfig) -> dict:
    """{checkpoint: quality record} of a crosscoder on paired held-out activations: L0 and the dead and dense
    shares are of the shared codes (the same for every checkpoint), FVE is each checkpoint's reconstruction."""
    chunks = quality_chunks(cc, acts, cfg.n_token_chunks)
    return {n: {"checkpoint": n, **_summary(cfg, chunks, model=m)} for m, n in enumerate(cc.names)}


def quality_columns(quality: Mapping, reference: str, target: str) -> dict:
    """The summary columns of ``target``'s row from the quality records: ``target_<q>`` and
    ``reference_<q>`` for q in ``QUALITY_COLUMNS`` that were measured, with ``_lo`` / ``_hi`` beside the
    sampled ones (``reference_fve`` / ``target_fve`` are the scoring's own: only their interval is added)."""
    out = {}
    for side, key in (("reference", reference), ("target", target)):
        rec = quality.get(key) or {}
        for q in QUALITY_COLUMNS:
            if q not in rec:
                continue
            if q not in _WRITTEN:
                out[f"{side}_{q}"] = rec[q]
            if q in SAMPLED_QUALITY:
                out[f"{side}_{q}_lo"], out[f"{side}_{q}_hi"] = rec.get(f"{q}_lo"), rec.get(f"{q}_hi")
    return out


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def quality_messages(summary: pd.DataFrame, reference: str, cfg: DiagnosticsConfig) -> list[str]:
    """One warning per target and check where its SAE is much worse than the reference's: FVE lower by more
    than ``cfg.max_fve_drop``, CE loss recovered lower by more than ``cfg.max_ce_recovered_drop`` (two
    checks, two messages: the CE one comes once the models have been run, ``add_lm_quality``). A check is
    skipped where the reference's own number is at or below 0 (it reconstructs nothing to compare with) and
    where the two intervals (``<q>_lo`` / ``<q>_hi``, where given) overlap: the gap is not measured.

    Examples
    --------
    >>> s = pd.DataFrame({"reference_fve": [0.9, 0.9, -0.35], "target_fve": [0.88, 0.6, -0.47]},
    ...                  index=["rl", "sft", "dpo"])
    >>> [m.split(":")[0] for m in quality_messages(s, "base", DiagnosticsConfig())]
    ['sft']
    >>> s["reference_fve_lo"], s["target_fve_hi"] = 0.5, 0.7  # overlapping intervals: not measured
    >>> quality_messages(s, "base", DiagnosticsConfig())
    []
    """
    out = []
    checks = (
        ("fve", cfg.max_fve_drop, "max_fve_drop", "explains {t:.1%} of the variance of its held-out activations"),
        ("ce_recovered", cfg.max_ce_recovered_drop, "max_ce_recovered_drop",
         "recovers {t:.1%} of the language-model loss spliced in at the hook (CE loss recovered)"),
    )  # fmt: skip
    for name, row in summary.iterrows():
        for q, limit, field, words in checks:
            t, r = _num(row.get(f"target_{q}")), _num(row.get(f"reference_{q}"))
            # a reference at or below 0 reconstructs nothing itself (e.g. dictionaries without a trained
            # encoder, as the planted known-answer SAEs): a gap to it measures nothing
            if not (math.isfinite(t) and math.isfinite(r) and r > 0 and r - t > limit):
                continue
            # and the gap must be measured: the intervals, where there are, do not overlap (on an untrained
            # model CE_zero ~ CE_clean and the ratio is noise)
            t_hi, r_lo = _num(row.get(f"target_{q}_hi")), _num(row.get(f"reference_{q}_lo"))
            if math.isfinite(t_hi) and math.isfinite(r_lo) and t_hi >= r_lo:
                continue
            out.append(
                f"{name}: its SAE is much worse than the {reference} SAE: it {words.format(t=t)} against {r:.1%} "
                f"for the {reference} SAE (lower by more than {field}={limit:g}). Features its SAE did not learn "
                f"cannot be matched and poorly learned ones match poorly, so a reading of 'novel' for {name} "
                "means little. Train its SAE longer or wider (or check its activations) before reading its "
                "fractions; the report's SAE quality table has every checkpoint's."
            )
    return out


def held_out_windows(data, models: Mapping, sequence_ids, pad_token_id=None, max_tokens: int | None = None,
                     batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The token windows (ids, mask) of the held-out sequences ``sequence_ids`` (rows of the data as
    collect_activations numbered them), read again from ``data`` (token ids, or text tokenized as collected),
    in order, up to ``max_tokens`` real tokens (at least one sequence)."""
    data = as_data(data, None)
    wanted = torch.unique(torch.as_tensor(sequence_ids))
    if is_text(data):
        source = text_windows(data, models)
    else:
        source = TensorWindows(*prepare_tokens(data, models, None, pad_token_id))
    ids_parts, mask_parts, start, total = [], [], 0, 0
    for ids, mask in source.batches(batch_size):
        sel = torch.isin(torch.arange(start, start + len(ids)), wanted)
        start += len(ids)
        for i in torch.nonzero(sel).squeeze(1).tolist():
            if max_tokens is not None and ids_parts and total + int(mask[i].sum()) > max_tokens:
                break
            ids_parts.append(ids[i])
            mask_parts.append(mask[i].bool())
            total += int(mask[i].sum())
        else:
            continue
        break
    width = max(len(x) for x in ids_parts)
    pad = torch.nn.functional.pad
    return (
        torch.stack([pad(x, (0, width - len(x))) for x in ids_parts]),
        torch.stack([pad(m, (0, width - len(m))) for m in mask_parts]),
    )


def add_lm_quality(cmp, models: Mapping, data, held_out, pad_token_id=None, progress: bool = False) -> None:
    """Add the language-model quality (CE loss recovered, KL) of every dictionary of ``cmp`` (its SAEs and
    ``extras["replica_saes"]``, or its crosscoder) to ``cmp.meta["quality"]`` and the summary, on the held-out
    sequences of ``held_out`` read again from ``data``; issue and record the quality warnings this adds.
    ``CompareConfig.lm_eval_tokens=0`` skips it."""
    cfg = CompareConfig.from_dict(cmp.meta.get("config") or {})
    if not cfg.lm_eval_tokens or held_out.sequence_ids is None:
        return
    reference, meta = cmp.meta.get("reference", "base"), held_out.meta or {}
    ids, mask = held_out_windows(data, models, held_out.sequence_ids, pad_token_id, cfg.lm_eval_tokens)
    drop_bos, factor, medians = meta.get("drop_bos", True), meta.get("outlier_factor"), meta.get("median_norm") or {}
    max_norms = {n: factor * medians[n] if factor and n in medians else None for n in models}
    quality = cmp.meta.setdefault("quality", {})
    dictionaries = cmp.dictionaries or {}
    if "crosscoder" in dictionaries:
        sums = splice_crosscoder(dictionaries["crosscoder"], models, ids, mask, cmp.meta.get("hook"), drop_bos, max_norms)
    else:
        keys = _keys(dictionaries, cmp.extras.get("replica_saes") or {})
        sums = {}
        for name in progress_bar(list(models), desc="SAE quality: LM loss", disable=not progress):
            mine = {k: d for k, (n, d) in keys.items() if n == name}
            if mine:
                sums.update(splice_sequences(models[name], mine, ids, mask, cmp.meta.get("hook"), drop_bos, max_norms[name]))
    for key, s in sums.items():
        rec = quality.setdefault(key, {"checkpoint": key})
        rec.update(_summary(cfg, lm=sequence_chunks(s, cfg.n_token_chunks)))
    for target in cmp.summary.index:
        for col, v in quality_columns(quality, reference, str(target)).items():
            if any(col.startswith(f"{side}_{q}") for side in ("reference", "target") for q in LM_QUALITY):
                cmp.summary.loc[target, col] = v
    known = cmp.meta.setdefault("warnings", [])
    for m in quality_messages(cmp.summary, reference, cfg.diagnostics):
        if m not in known:
            known.append(m)
            warnings.warn(m, FeatdiffWarning, stacklevel=3)


def quality_table(meta: Mapping) -> pd.DataFrame:
    """One row per dictionary of ``meta["quality"]`` (the reference's first, then the targets', then the
    replicas'): L0, FVE, dead and dense shares, CE loss recovered and KL, each measured number with its
    interval as columns ``<q>``, ``<q>_lo``, ``<q>_hi``. Empty when the comparison measured none.

    Examples
    --------
    >>> t = quality_table({"reference": "base", "quality": {"rl": {"checkpoint": "rl", "l0": 4.0},
    ...                    "base": {"checkpoint": "base", "l0": 3.0}}})
    >>> t.index.tolist(), t["l0"].tolist()
    (['base', 'rl'], [3.0, 4.0])
    """
    records = meta.get("quality") or {}
    if not records:
        return pd.DataFrame()
    reference = meta.get("reference", "base")
    order = sorted(records, key=lambda k: (k != reference, " replica " in k, k not in (meta.get("targets") or [k])))
    cols = [c for q in QUALITY_COLUMNS for c in (q, f"{q}_lo", f"{q}_hi")]
    rows = {k: {c: records[k].get(c) for c in cols if any(c in r for r in records.values())} for k in order}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("dictionary")
