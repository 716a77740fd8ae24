"""Figures of a Comparison (and, for the demo, the HTML report)."""

from __future__ import annotations

import numpy as np

STATUS_COLORS = {"reuse": "#4C72B0", "recombination": "#DD8452", "novelty": "#C44E52"}


def plot_comparison(cmp):
    """Left: reuse / recombination / novelty per checkpoint (bars: corrected, dots: raw). Right: drift of
    reused features per checkpoint (histograms)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    s = cmp.summary
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(len(s))
    bottom = np.zeros(len(s))
    for col, color in STATUS_COLORS.items():
        vals = s[col].to_numpy(dtype=float)
        ax0.bar(x, vals, bottom=bottom, color=color, label=col, width=0.6)
        if f"{col}_raw" in s:
            raw = s[f"{col}_raw"].to_numpy(dtype=float)
            ax0.scatter(x + 0.38, raw, color=color, marker="o", s=14, edgecolor="k", linewidth=0.4, zorder=3)
        bottom += np.nan_to_num(vals)
    ax0.set_xticks(x, list(s.index))
    ax0.set_ylim(0, 1.05)
    ax0.set_ylabel("fraction of live features")
    ax0.set_title(f"features vs {cmp.meta.get('reference', 'reference')} (dots: uncorrected)")
    ax0.legend(fontsize=8, loc="upper right")
    f = cmp.features
    bins = np.linspace(0, 0.3, 31)
    for name in s.index:
        d = f.loc[(f["checkpoint"] == name) & f["drift"].notna(), "drift"].to_numpy(dtype=float)
        if len(d):
            ax1.hist(np.clip(d, 0, 0.3), bins=bins, histtype="step", linewidth=1.5, label=f"{name} (n={len(d)})")
    ax1.set_xlabel("drift = 1 - cosine to matched base feature (reused features)")
    ax1.set_ylabel("features")
    ax1.set_title("drift distribution")
    if ax1.has_data():
        ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig
