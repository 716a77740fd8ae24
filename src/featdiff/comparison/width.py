"""The readings the width check is judged on (its thresholds are featdiff.comparison.config.WidthCheck):
whether an SAE narrower than the features should be trained again wider (docs/metrics.md, "Widening";
docs/design.md)."""

from __future__ import annotations

from featdiff.comparison.table import Comparison


def scored_shares(cmp: Comparison, reference: str) -> dict[str, float]:
    """Per checkpoint: the share of its SAE's latents that are scored (live, not faint) on the held-out
    tokens."""
    out = {}
    n_ref = cmp.meta.get("reference_n_features") or 0
    if n_ref:
        out[reference] = cmp.meta.get("reference_n_scored", 0) / n_ref
    s = cmp.summary
    for n in s.index:
        total = float(s.loc[n, "n_features"])  # its dictionary's latents (absorbed rows are none of them)
        if total > 0:
            out[str(n)] = float(s.loc[n, "n_scored"]) / total
    return out
