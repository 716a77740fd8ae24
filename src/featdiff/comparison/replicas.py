"""Replicas plumbing of compare_dictionaries (what the floors and intervals are measured on): reference (and target) replica SAEs compared with the
reference, turned into the interval, floor and corrected columns of featdiff.metrics.uncertainty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from featdiff.activations.activations import ActivationSet, OnDiskActivationSet
from featdiff.alignment.matching import Alignment, align
from featdiff.comparison.statuses import add_absorbed, add_children, feature_table
from featdiff.dictionaries.stats import scored_features
from featdiff.errors import FeatdiffError
from featdiff.metrics.uncertainty import (
    profile_of,
    recombination_detection,
    summarize_uncertainty,
    union_reused,
)


def check_width(dictionary, acts: ActivationSet, name: str) -> None:
    d_in = dictionary.W_dec.shape[-1]
    if d_in != acts.d_model:
        raise FeatdiffError(
            f"The dictionary of {name!r} has d_in={d_in} but its activations have d_model={acts.d_model}; "
            "use dictionaries trained at the same hook as the activations."
        )


def _replica_table(
    reference,
    replica,
    acts: ActivationSet | None,
    name: str,
    cfg,
    ref_live,
    ref_freq,
    reference_name=None,
    extra_reference=None,
    scores=None,
) -> tuple[pd.DataFrame, Alignment]:
    """The feature table of ``replica`` (another SAE of checkpoint ``name``, trained with another seed)
    aligned to ``reference`` (an SAE of ``name`` too, or the reference), scored on ``name``'s activations
    (the reference's absorbed recombinations on ``reference_name``'s, by default ``name``'s). ``scores``:
    the replica's (frequency, live mask) on ``name``'s activations where already computed (``replica_scores``)."""
    pair, rep_live, rep_freq = None, None, None
    if acts is not None:
        rep_freq, rep_live = scores if scores is not None else _scores(replica, acts, name, cfg)
        if cfg.on == "activations":
            pair = (
                ActivationSet({name: acts[name], "__replica__": acts[name]}, acts.hook)
                if not isinstance(acts, OnDiskActivationSet)
                else acts._aliased(name, "__replica__")  # on disk: a view, nothing loaded
            )
    al = align(
        reference,
        replica,
        method=cfg.method,
        on=cfg.on,
        activations=pair,
        reference_name=name,
        target_name="__replica__",
        ref_live=ref_live,
        tgt_live=rep_live,
    )
    table = feature_table(al, cfg, ref_freq, rep_freq, extra_reference)
    if acts is not None:
        table = add_children(table, al, cfg, replica, acts.column(name))
        table = add_absorbed(
            table, al, cfg, reference, acts.column(reference_name or name), replica, acts.column(name)
        )
    return table, al


def as_replicas(replicas, reference: str) -> dict[str, list]:
    """``replicas=`` (a list of reference replicas, or {checkpoint: [replicas]}) as
    {checkpoint: [replicas]}."""
    if replicas is None:
        return {}
    if isinstance(replicas, dict):
        return {n: list(v) if isinstance(v, (list, tuple)) else [v] for n, v in replicas.items()}
    if isinstance(replicas, (list, tuple)):
        return {reference: list(replicas)}
    raise FeatdiffError(
        "replicas must be a list of reference SAEs or a dict {checkpoint: [SAEs]}; got "
        f"{type(replicas).__name__}."
    )


def _scores(dictionary, acts: ActivationSet, name: str, cfg) -> tuple[torch.Tensor, np.ndarray]:
    """(firing frequency, live mask) of ``dictionary`` on ``name``'s activations, scored as the reference is."""
    freq, _, live = scored_features(dictionary, acts.column(name), cfg.min_contribution)
    return freq, live.numpy()


def _live_rows(dictionary, live: np.ndarray | None) -> torch.Tensor:
    W = dictionary.W_dec.detach()
    return W if live is None else W[torch.as_tensor(np.flatnonzero(live))]


def _cat(rows: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.cat(rows) if rows else None


def _with_children(reused: np.ndarray, table: pd.DataFrame, live: np.ndarray | None = None) -> np.ndarray:
    """Per live target feature, union-reused or not, with a child latent (``parent`` >= 0,
    featdiff.comparison.statuses.add_children) as reused as its parent. Absorbed reference features (status
    "absorbed") are in no fraction, so they add nothing here."""
    if live is None or "parent" not in table or not (table["parent"] >= 0).any():
        return reused
    reused = np.asarray(reused).copy()
    pos = np.cumsum(live) - 1  # feature id -> its index among the live features
    for j, i in zip(table["feature"].to_numpy(), table["parent"].to_numpy(), strict=True):
        if i >= 0 and j < len(live) and live[j] and live[i]:
            reused[pos[j]] = max(reused[pos[j]], reused[pos[i]])
    return reused


def d_sae(dictionary) -> int:
    return int(dictionary.W_dec.shape[0])


def reference_replica_profiles(reference_sae, reps: list, acts, reference: str, cfg, ref_live, ref_freq):
    """Profiles of the reference's replicas against the reference (the base-vs-base comparisons), each
    replica's union reuse against the reference and the other replicas (the ``union`` estimator's null), and
    each replica's live decoder rows and their feature ids."""
    profiles, tables = [], []
    for rep in reps:
        if acts is not None:
            check_width(rep, acts, f"{reference} (replica)")
    # one encoding pass per replica: its live rows serve the other replicas' fits, the union estimator and
    # the targets' recombination fits (compare_dictionaries)
    scores = [_scores(rep, acts, reference, cfg) if acts is not None else None for rep in reps]
    rows = [_live_rows(rep, None if sc is None else sc[1]) for rep, sc in zip(reps, scores, strict=True)]
    ids = [np.arange(d_sae(r)) if sc is None else np.flatnonzero(sc[1]) for r, sc in zip(reps, scores, strict=True)]
    for i, rep in enumerate(reps):
        others = _cat(rows[:i] + rows[i + 1 :])  # a replica's recombinations may use the other replicas' rows
        table, al = _replica_table(
            reference_sae, rep, acts, reference, cfg, ref_live, ref_freq, None, others, scores[i]
        )
        rl = ref_live if ref_live is not None else np.ones(d_sae(reference_sae), bool)
        profiles.append(profile_of(table, rl))
        tables.append((table, al))
        profiles[-1].recombination_detection = recombination_detection(
            rep.W_dec,
            al.tgt_live,
            reference_sae.W_dec,
            rl,
            cfg.fit_threshold,
            cfg.reuse_threshold,
            cfg.max_components,
            cfg.min_components,
            seed=len(profiles),
            extra_reference=others,  # as the replica's own fit (and a target's) may use them
        )
    # each replica against the N others (the reference and the other replicas): the union estimator's null
    union_null = []
    for i, (table, al) in enumerate(tables):
        others = [reference_sae.W_dec[torch.as_tensor(np.flatnonzero(al.ref_live))]]
        others += [
            t_al.tgt_decoder[torch.as_tensor(np.flatnonzero(t_al.tgt_live))]
            for j, (_, t_al) in enumerate(tables)
            if j != i
        ]
        reused = union_reused(reps[i].W_dec, al.tgt_live, others, cfg.reuse_threshold)
        union_null.append(_with_children(reused, table, al.tgt_live))
        profiles[i].union_reused = union_null[-1]
    return profiles, union_null, rows, ids


def target_union(decoder, live: np.ndarray, table: pd.DataFrame, base_rows: list[torch.Tensor], cfg):
    """Per live feature of a target dictionary (or of a target replica), the share of the N-of-(N + 1)
    subsets of the base dictionaries' live rows (``base_rows``: the reference's, then its N replicas')
    that match it many-to-one: the same number of dictionaries each replica is matched against
    (featdiff.metrics.uncertainty.union_reused). None without replicas."""
    if len(base_rows) < 2:
        return None
    shares = union_reused(decoder, live, base_rows, cfg.reuse_threshold, size=len(base_rows) - 1)
    return _with_children(shares.astype(float), table, live)


def uncertainty_columns(
    table,
    al,
    name,
    saes,
    replicas,
    null_profiles,
    union_null,
    rep_rows,
    transfer,
    acts,
    cfg,
    ref_live,
    live_mask,
    freqs,
    reference_fve,
) -> dict:
    """The interval, floor and corrected columns of target ``name`` (featdiff.metrics.uncertainty);
    ``rep_rows``: the reference replicas' live decoder rows (``reference_replica_profiles``)."""
    reference = al.reference
    target = profile_of(table, ref_live)
    ref_decs = [saes[reference].W_dec[torch.as_tensor(np.flatnonzero(ref_live))], *rep_rows]
    target.union_reused = target_union(saes[name].W_dec, al.tgt_live, table, ref_decs, cfg)
    tgt_profiles, q_target = [], []
    for rep in replicas.get(name, []):
        if acts is not None:
            check_width(rep, acts, f"{name} (replica)")
        t_rep, t_al = _replica_table(
            saes[reference], rep, acts, name, cfg, live_mask[reference], freqs[reference], reference, _cat(rep_rows)
        )
        tgt_profiles.append(profile_of(t_rep, ref_live))
        # its union share as the target's, so that a draw on a target replica is corrected as the target is
        tgt_profiles[-1].union_reused = target_union(rep.W_dec, t_al.tgt_live, t_rep, ref_decs, cfg)
        t_tt, _ = _replica_table(saes[name], rep, acts, name, cfg, live_mask[name], freqs[name])
        q_target.append(profile_of(t_tt, al.tgt_live).fractions()[0])
    out = summarize_uncertainty(
        target,
        null_profiles,
        tgt_profiles,
        q_target or None,
        union_null or None,
        transfer,
        reference_fve,
        cfg.estimator,
        cfg.interval_level,
        cfg.n_bootstrap,
        cfg.correct,
    )
    out["noise_floor_reuse"] = out["reuse_floor"]
    out["reference_n_scored"] = int(ref_live.sum())
    fired = np.ones(len(ref_live), bool) if freqs[reference] is None else freqs[reference].numpy() > 0
    out["reference_n_dead"] = int((~fired).sum())  # never fired
    out["reference_n_faint"] = int((fired & ~ref_live).sum())  # fired, below min_contribution
    out["n_replicas"] = len(replicas.get(reference, []))
    return out
