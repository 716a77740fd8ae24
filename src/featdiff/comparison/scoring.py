"""Scoring: aligned dictionaries -> a ``Comparison``. ``compare_dictionaries`` scores one SAE per checkpoint
against the reference's (docs/design.md's definitions); ``compare_crosscoder`` scores one shared crosscoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from featdiff.activations.activations import ActivationSet
from featdiff.alignment.matching import align
from featdiff.comparison.config import CompareConfig
from featdiff.comparison.diagnostics import emit_warnings
from featdiff.comparison.quality import crosscoder_quality, dictionary_quality, quality_columns
from featdiff.comparison.replicas import (
    as_replicas,
    check_width,
    d_sae,
    reference_replica_profiles,
    uncertainty_columns,
)
from featdiff.comparison.statuses import add_absorbed, add_children, feature_table
from featdiff.comparison.table import STATUSES, Comparison
from featdiff.core.output import progress_bar
from featdiff.dictionaries.stats import firing_frequency, scored_features, unit_decoder
from featdiff.errors import FeatdiffError
from featdiff.metrics.coverage import reference_misses
from featdiff.metrics.crosscoder import decoder_cosine, latent_scaling, mas, nrn
from featdiff.metrics.recombination import extra_rows_kept, fit_components
from featdiff.metrics.registry import MetricContext, available_metrics, compute_metric, get_metric
from featdiff.metrics.reuse import base_coverage
from featdiff.metrics.uncertainty import UNSCORED, correct, fve_chunks


def correct_fractions(
    reuse_raw: float, recombination_raw: float, noise_floor: float
) -> tuple[float, float, float]:
    """Correct raw fractions for imperfect dictionary learning with one number, the noise floor q (the
    reuse of a reference replica against the reference): featdiff.metrics.uncertainty.correct's ``ratio``
    estimator with no recombination floor, the one implementation.

    Two reference SAEs trained on the same data with different seeds match only a fraction q of their
    features, although every feature is shared: a feature present in both checkpoints is detected as such
    with probability about q, and a missed one looks novel. So reuse = min(1, reuse_raw / q),
    recombination = min(recombination_raw / q, 1 - reuse), novelty = 1 - reuse - recombination (q is capped
    at 1). Without a noise floor (NaN, None or <= 0) the raw fractions are returned.

    Examples
    --------
    >>> [round(x, 4) for x in correct_fractions(0.3, 0.1, 0.6)]
    [0.5, 0.1667, 0.3333]
    """
    if noise_floor is None or not np.isfinite(noise_floor) or noise_floor <= 0:
        return reuse_raw, recombination_raw, max(0.0, 1.0 - reuse_raw - recombination_raw)
    q = min(1.0, noise_floor)
    raw = np.array([reuse_raw, recombination_raw, 1.0 - reuse_raw - recombination_raw])
    r, c, n, _ = correct(raw, np.array([q, 0.0, 1.0 - q]), "ratio")
    return float(r), float(c), float(n)


def _fractions(frac: dict, split: float) -> dict:
    """The summary's fraction columns from measured status fractions: the ``*_raw`` ones; the corrected ones
    are NaN until a noise floor corrects them (featdiff.metrics.uncertainty.summarize_uncertainty), so that
    a column named ``reuse`` is always a corrected reading."""
    raw = {"reuse": frac["reused"], "recombination": frac["recombined"], "novelty": frac["novel"]}
    return {**{k: float("nan") for k in raw}, **{f"{k}_raw": v for k, v in raw.items()}, "split": split}


def compare_dictionaries(
    saes: dict,
    acts: ActivationSet | None = None,
    reference: str = "base",
    metrics: list | None = None,
    config: CompareConfig | None = None,
    progress: bool = True,
    meta: dict | None = None,
    replicas: list | dict | None = None,
    **overrides,
) -> Comparison:
    """Align every target dictionary to the reference one and score it (docs/design.md's definitions).

    Parameters
    ----------
    saes : dict
        Checkpoint names to dictionaries (sae-lens SAEs).
    acts : ActivationSet, optional (recommended)
        Every checkpoint's activations on the same evaluation tokens. With them, features that never fire
        (``dead``) or fire below ``min_contribution`` of the decoded energy (``faint``) are counted, not
        scored, firing frequencies compared and variance explained.
    reference : str
        The dictionary the others are aligned to.
    metrics : list, optional
        Registered metric names or callables to compute (default: every registered metric).
    config : CompareConfig, optional
        Every scoring threshold; ``overrides`` set single fields of it.
    progress : bool
        Show progress bars.
    meta : dict, optional
        Entries copied into ``cmp.meta``.
    replicas : list or dict, optional
        Dictionaries trained with other seeds on the same data: a list of reference replicas, or
        ``{checkpoint: [SAEs]}`` (targets may have replicas too). Each reference replica compared with the
        reference gives the base-vs-base value of every summary column (``<col>_floor``) and the null
        profile that corrects the fractions (``CompareConfig.estimator``, featdiff.metrics.uncertainty);
        replicas and a bootstrap over features and token chunks give each column's interval (``<col>_lo``,
        ``<col>_hi`` at ``interval_level``). Without replicas there is no corrected reading: ``reuse``,
        ``recombination``, ``novelty`` are NaN and ``*_raw`` hold the fractions (docs/metrics.md, "Naming").
    **overrides :
        CompareConfig fields.

    Examples
    --------
    >>> import torch
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> W = torch.eye(8)
    >>> saes = {"base": sae_from_dictionary(W, k=2),
    ...         "rl": sae_from_dictionary(W[[1, 0, 2, 3, 4, 5, 6, 7]], k=2)}
    >>> cmp = compare_dictionaries(saes, progress=False)
    >>> cmp.summary.loc["rl", ["reuse_raw", "recombination_raw", "novelty_raw", "drift"]].tolist()
    [1.0, 0.0, 0.0, 0.0]
    >>> bool(cmp.summary.loc["rl", "uncorrected"]), float(cmp.summary.loc["rl", "reuse"])  # no replicas
    (True, nan)
    """
    cfg = config or CompareConfig()
    if overrides:
        cfg = CompareConfig.from_dict({**cfg.to_dict(), **overrides})
    if not isinstance(saes, dict) or len(saes) < 2:
        raise FeatdiffError("compare_dictionaries needs a dict of at least two dictionaries {name: SAE}.")
    if reference not in saes:
        raise FeatdiffError(f"The reference {reference!r} is not among the dictionaries {list(saes)}.")
    if acts is not None:
        missing = [n for n in saes if n not in acts]
        if missing:
            raise FeatdiffError(
                f"Activations are missing checkpoints {missing}; the ActivationSet has {acts.names}."
            )
    chosen = [get_metric(m) for m in (metrics if metrics is not None else list(available_metrics().index))]
    targets = [n for n in saes if n != reference]
    replicas = as_replicas(replicas, reference)
    unknown = set(replicas) - set(saes)
    if unknown:
        raise FeatdiffError(f"replicas= names checkpoints {sorted(unknown)} that are not among {list(saes)}.")

    freqs: dict[str, torch.Tensor | None] = {n: None for n in saes}
    own_fve: dict[str, float] = {n: float("nan") for n in saes}
    live_mask: dict[str, np.ndarray | None] = {n: None for n in saes}
    if acts is not None:
        for n in progress_bar(list(saes), desc="encoding", disable=not progress):
            check_width(saes[n], acts, n)
            freqs[n], own_fve[n], live = scored_features(saes[n], acts.column(n), cfg.min_contribution)
            live_mask[n] = live.numpy()
    ref_live = live_mask[reference] if live_mask[reference] is not None else np.ones(d_sae(saes[reference]), bool)
    # each SAE's own quality (L0, FVE, dead / dense shares) on the evaluation tokens, replicas' too
    quality = dictionary_quality(saes, replicas, acts, cfg, progress) if acts is not None else {}
    null_profiles, union_null, rep_rows, rep_ids = reference_replica_profiles(
        saes[reference], replicas.get(reference, []), acts, reference, cfg, live_mask[reference], freqs[reference]
    )

    # recombinations may be fitted with the reference replicas' rows too (a component the reference SAE did
    # not learn is often in a replica; featdiff.metrics.recombination.recombination)
    union_rows = torch.cat(rep_rows) if rep_rows else None
    rows, tables, alignments, misses = [], [], {}, {}
    for name in progress_bar(targets, desc="aligning", disable=not progress):
        al = align(
            saes[reference],
            saes[name],
            method=cfg.method,
            on=cfg.on,
            activations=acts if cfg.on == "activations" else None,
            reference_name=reference,
            target_name=name,
            ref_live=live_mask[reference],
            tgt_live=live_mask[name],
        )
        alignments[name] = al
        table = feature_table(al, cfg, freqs[reference], freqs[name], extra_reference=union_rows)
        if acts is not None:
            table = add_children(table, al, cfg, saes[name], acts.column(name))
            table = add_absorbed(
                table, al, cfg, saes[reference], acts.column(reference), saes[name], acts.column(name)
            )
        # absorbed reference features (CompareConfig.absorbed) are no target feature; faint and dead are not scored
        absorbed = table["status"] == "absorbed"
        live = ~table["status"].isin(UNSCORED)
        n_scored = int(live.sum())
        frac = {
            s: float((table["status"] == s).sum() / n_scored) if n_scored else float("nan")
            for s in ("reused", "split", "recombined", "novel")
        }
        frac["reused"] += frac["split"]  # a split is a reuse of a reference feature (a subset of reuse)
        row = {
            "checkpoint": name,
            **_fractions(frac, frac["split"]),
            "drift": float(table["drift"].mean()) if table["drift"].notna().any() else float("nan"),
            "freq_shift": float(table.loc[table.status == "reused", "freq_shift"].mean()),
            "base_coverage": base_coverage(al, cfg.reuse_threshold),
            "transfer_fve": float("nan"),
            "reference_fve": own_fve[reference],
            "target_fve": float("nan"),
            "noise_floor_reuse": float("nan"),
            "n_features": int((~absorbed).sum()),
            "n_scored": n_scored,
            "n_dead": int((table["status"] == "dead").sum()),  # never fired
            "n_faint": int((table["status"] == "faint").sum()),  # fired, below min_contribution
            "n_absorbed": int(absorbed.sum()),
        }
        transfer = None
        if acts is not None:
            # SAE transfer (Kissane et al. 2024): the reference SAE on the target's activations, per token
            # chunk (summed, the same number as one pass; resampled, its interval).
            transfer = fve_chunks(saes[reference], acts.column(name), cfg.n_token_chunks)
            row["target_fve"] = own_fve[name]
        row.update(
            uncertainty_columns(
                table, al, name, saes, replicas, null_profiles, union_null, rep_rows, transfer, acts, cfg, ref_live,
                live_mask, freqs, own_fve[reference],
            )
        )
        row.update(quality_columns(quality, reference, name))
        if acts is not None:  # base features the reference dictionary lacks (featdiff.metrics.coverage)
            status = dict(zip(table["feature"].tolist(), table["status"].astype(str).tolist(), strict=True))
            misses[name] = reference_misses(
                saes[name], acts.column(name), acts.column(reference), status, saes[reference],
                threshold=cfg.diagnostics.present_correlation,
            )
        ctx = MetricContext(reference, name, al, saes[reference], saes[name], acts, table)
        for metric in chosen:
            summ, feats = compute_metric(metric, ctx)
            clash = set(summ) & set(row)
            if clash:
                raise FeatdiffError(
                    f"Metric {metric.name!r} would overwrite the summary columns {sorted(clash)}; rename it."
                )
            row.update(summ)
            if feats is not None:
                clash = (set(feats.columns) - {"feature"}) & set(table.columns)
                if clash:
                    raise FeatdiffError(
                        f"Metric {metric.name!r} returns columns {sorted(clash)} that already exist."
                    )
                table = table.merge(feats, on="feature", how="left", validate="one_to_one")
        rows.append(row)
        tables.append(table)
    summary = pd.DataFrame(rows).set_index("checkpoint")
    summary["indistinguishable_from_reference"] = summary["indistinguishable_from_reference"].astype("boolean")
    features = pd.concat(tables, ignore_index=True)
    features["status"] = pd.Categorical(features["status"], categories=STATUSES)
    sources = replica_components(features, alignments, rep_ids, union_rows, cfg.reuse_threshold)
    meta = {
        **(meta or {}),
        "interval_level": cfg.interval_level,
        "estimator": cfg.estimator if cfg.correct else None,
        "n_replicas": {n: len(v) for n, v in replicas.items()},
        "reference": reference,
        "targets": targets,
        "config": cfg.to_dict(),
        "metrics": [m.name for m in chosen],
        "n_eval_tokens": None if acts is None else acts.n_tokens,
        "hook": None if acts is None else acts.hook,
    }
    if live_mask[reference] is not None:  # the reference's own live count, for the diagnostics
        meta["reference_n_features"] = len(live_mask[reference])
        meta["reference_n_scored"] = int(live_mask[reference].sum())
    if misses:  # per target: its base-present latents and how many the reference misses (diagnostics)
        meta["reference_misses"] = misses
    if quality:  # per dictionary (replicas too): its quality records (featdiff.comparison.quality)
        meta["quality"] = quality
    if sources:  # recombination components from the reference's replicas: {component id: [replica, feature]}
        meta["replica_components"] = sources
    cmp = Comparison(summary, features, meta, alignments=alignments, dictionaries=dict(saes))
    if acts is not None:  # in memory only (not written by to_dir): the feature cards' contexts
        cmp.extras["activations"] = acts
    if replicas.get(reference):  # in memory only: the cards of components from replicas
        cmp.extras["replica_saes"] = replicas
    emit_warnings(cmp, cfg.diagnostics)  # FeatdiffWarnings where a reading is weak; kept in cmp.meta["warnings"]
    return cmp


def replica_components(features, alignments, rep_ids, union_rows, reuse_threshold) -> dict[str, list[int]]:
    """Where each recombination component past the reference's width comes from (``recombination``'s
    ``extra_reference`` ids ``d_ref + i``): ``{str(id): [replica number from 1, feature of that replica]}``,
    for the ids some feature's ``components`` name."""
    if union_rows is None or not alignments or "components" not in features:
        return {}
    al = next(iter(alignments.values()))  # the reference side is the same in every alignment
    used = {int(c[0]) for comps in features["components"] if comps is not None for c in comps}
    used = {c for c in used if c >= al.d_ref}
    if not used:
        return {}
    ref_rows = al.ref_decoder[torch.as_tensor(np.flatnonzero(al.ref_live))]
    kept = extra_rows_kept(union_rows, ref_rows, reuse_threshold)
    origin = [(j + 1, int(f)) for j, ids in enumerate(rep_ids) for f in ids]  # the rows of union_rows, in order
    origin = [o for o, k in zip(origin, kept.tolist(), strict=True) if k]
    return {str(i): list(origin[i - al.d_ref]) for i in sorted(used) if i - al.d_ref < len(origin)}


def compare_crosscoder(
    cc,
    acts: ActivationSet | None = None,
    reference: str = "base",
    config: CompareConfig | None = None,
    progress: bool = True,
    meta: dict | None = None,
) -> Comparison:
    """Score one shared crosscoder as a Comparison (the ``method="crosscoder"`` view).

    Per target checkpoint T and feature k, with NRN_k = n_k^T / (n_k^base + n_k^T) (decoder norms):
    a feature whose base and T norms make less than ``config.pair_share`` of its norms over all checkpoints
    belongs to the others (status "other", left out of T's fractions; only with three or more).
    NRN below ``config.nrn_shared[0]`` means the feature belongs to the base only (``status`` "base_only", not
    one of T's features); between the bounds it is shared: ``reused``, with ``similarity`` the cosine of
    its base and T decoder rows and ``drift`` = 1 - similarity; above ``config.nrn_shared[1]`` it is
    T-specific:
    ``recombined`` when 2-3 base decoder rows of the base's own features fit its T decoder row (OMP,
    cosine >= ``config.fit_threshold``), else ``novel``. Fractions are over T's live features (shared +
    specific).
    The features table also carries ``nrn``, one ``mas_<checkpoint>`` column per checkpoint, the
    M-model ``category`` (a checkpoint's name when its MAS > ``config.mas_threshold``, else "shared") and, for
    T-specific features when activations are given, latent scaling (Minder et al. 2025): ``nu_error``,
    ``nu_reconstruction`` and ``sparsity_artefact`` (the base does carry the feature; the crosscoder's
    sparsity penalty made it look specific). The summary counts those as ``n_artefacts``.
    """
    cfg = config or CompareConfig()
    if reference not in cc.names:
        raise FeatdiffError(
            f"The reference {reference!r} is not among the crosscoder's checkpoints {cc.names}."
        )
    lo, hi = cfg.nrn_shared
    mas_threshold, pair_share, p = cfg.mas_threshold, cfg.pair_share, cfg.p
    m = mas(cc, mas_threshold, p)
    dead = np.zeros(cc.d_sae, bool)
    freqs = None
    if acts is not None:
        freqs = firing_frequency(cc, acts).double().numpy()
        dead = freqs == 0
        m.loc[dead, "category"] = "dead"
    fve = cc.evaluate(acts).set_index("checkpoint") if acts is not None else None
    quality = crosscoder_quality(cc, acts, cfg) if acts is not None else {}
    norms = cc.decoder_norms(p)
    base_dec = unit_decoder(cc.decoder(reference))
    rows, tables = [], []
    targets = [n for n in cc.names if n != reference]
    for name in progress_bar(targets, desc="scoring", disable=not progress):
        r = nrn(cc, name, reference, p).to_numpy(dtype=float)
        cos = decoder_cosine(cc, reference, name).to_numpy(dtype=float)
        # with more than two checkpoints, a feature of the others (tiny norms in both the reference and T)
        # has an ill-defined NRN: it belongs to neither, and is left out of T's fractions
        pair = (norms[reference] + norms[name]) / norms.sum(axis=1).clip(lower=1e-30)
        other = (pair.to_numpy() < pair_share) & ~dead
        live_pair = ~dead & ~other
        shared = (r >= lo) & (r <= hi) & live_pair
        specific = (r > hi) & live_pair
        base_only = (r < lo) & live_pair
        base_feats = np.flatnonzero((r <= hi) & live_pair)
        status = np.full(cc.d_sae, "novel", dtype=object)
        status[shared] = "reused"
        status[base_only] = "base_only"
        status[other] = "other"
        status[dead] = "dead"
        rc = fit_components(
            unit_decoder(cc.decoder(name)),
            np.flatnonzero(specific),
            base_dec,
            base_feats,
            cfg.fit_threshold,
            cfg.max_components,
            cfg.min_components,
            margin=cfg.recombination_margin,
            min_coefficient=cfg.min_coefficient,
            n_candidates=cfg.n_candidates,
        )
        status[rc["recombined"].to_numpy()] = "recombined"
        scaling = pd.DataFrame(
            index=np.arange(cc.d_sae), columns=["nu_error", "nu_reconstruction"], dtype=float
        )
        artefact = np.zeros(cc.d_sae, bool)
        if acts is not None and specific.any():
            # Latent scaling (Minder et al. 2025): is a T-specific feature really absent from the base?
            ls = latent_scaling(
                cc, acts, features=np.flatnonzero(specific).tolist(), tuned=name, base=reference
            )
            ls = ls.set_index("feature")
            scaling.loc[ls.index, ["nu_error", "nu_reconstruction"]] = ls[["nu_error", "nu_reconstruction"]]
            artefact[ls.index.to_numpy()] = ls["sparsity_artefact"].to_numpy(dtype=bool)
        table = pd.DataFrame(
            {
                "checkpoint": name,
                "feature": np.arange(cc.d_sae, dtype=np.int64),
                "status": pd.Categorical(status, categories=[*STATUSES, "base_only", "other"]),
                "match": np.where(shared, np.arange(cc.d_sae), -1).astype(np.int64),
                "similarity": np.where(shared, cos, np.nan),
                "drift": np.where(shared, 1 - cos, np.nan),
                "freq_shift": np.nan,
                "components": rc["components"],
                "n_components": rc["n_components"],
                "fit_cosine": rc["fit_cosine"],
                "frequency": np.nan if freqs is None else freqs,
                "absorbed": False,  # a crosscoder has one latent per feature for every checkpoint
                "parent": -1,
                "nrn": r,
                "decoder_cosine": cos,
                "nu_error": scaling["nu_error"].to_numpy(dtype=float),
                "nu_reconstruction": scaling["nu_reconstruction"].to_numpy(dtype=float),
                "sparsity_artefact": artefact,
                "category": m["category"].to_numpy(),
                **{f"mas_{c}": m[c].to_numpy(dtype=float) for c in cc.names},
            }
        )
        own = shared | specific
        n_own = int(own.sum())
        frac = {
            s: float((status[own] == s).sum() / n_own) if n_own else float("nan")
            for s in ("reused", "recombined", "novel")
        }
        base_live = len(base_feats)
        rows.append(
            {
                "checkpoint": name,
                **_fractions(frac, 0.0),  # split 0: one shared latent per feature, no matching to lose
                "uncorrected": True,  # no replicas of a crosscoder: no noise floor, only the *_raw reading
                "drift": float(np.nanmean(np.where(shared, 1 - cos, np.nan)))
                if shared.any()
                else float("nan"),
                "freq_shift": float("nan"),
                "base_coverage": float(shared.sum() / base_live) if base_live else float("nan"),
                "transfer_fve": float("nan"),
                "reference_fve": float(fve.loc[reference, "fve"]) if fve is not None else float("nan"),
                "target_fve": float(fve.loc[name, "fve"]) if fve is not None else float("nan"),
                "noise_floor_reuse": float("nan"),
                "n_features": cc.d_sae,
                "n_scored": n_own,
                "n_dead": int(dead.sum()),
                "n_faint": 0,  # a crosscoder latent is scored when it fires
                "n_absorbed": 0,  # one shared latent per feature: nothing is carried without a row
                "specific_fraction": float((m["category"] == name).sum() / max(1, (~dead).sum())),
                "mean_nrn": float(np.nanmean(r[~dead])) if (~dead).any() else float("nan"),
                "n_artefacts": int(artefact.sum()),
                **quality_columns(quality, reference, name),
            }
        )
        tables.append(table)
    summary = pd.DataFrame(rows).set_index("checkpoint")
    features = pd.concat(tables, ignore_index=True)
    meta = {
        **(meta or {}),
        "method": "crosscoder",
        "reference": reference,
        "targets": targets,
        "config": cfg.to_dict(),
        "nrn_shared": list(cfg.nrn_shared),
        "mas_threshold": mas_threshold,
        "p": p,
        "crosscoder": cc.cfg.to_dict(),
        "n_eval_tokens": None if acts is None else acts.n_tokens,
        **({"quality": quality} if quality else {}),
    }
    cmp = Comparison(summary, features, meta, dictionaries={"crosscoder": cc}, extras={"mas": m})
    if acts is not None:  # in memory only (not written by to_dir): the feature cards' contexts
        cmp.extras["activations"] = acts
    emit_warnings(cmp, cfg.diagnostics)  # FeatdiffWarnings where a reading is weak; kept in cmp.meta["warnings"]
    return cmp
