"""Figures of a comparison, of the lab's accuracy and of the crosscoder view (matplotlib, headless).

Each function returns a matplotlib Figure and never shows it; ``figure_png`` renders one for the report.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd

STATUS_COLORS = {"reuse": "#4C72B0", "recombination": "#DD8452", "novelty": "#C44E52"}


CHECKPOINT_COLORS = {"base": "#7F7F7F", "sft": "#DD8452", "rl": "#4C72B0"}


ACCURACY_GROUPS = ["in_domain", "near_domain", "out_of_domain"]


CHECKPOINT_ORDER = ["base", "sft", "rl"]

# What each number means (shown under the tables of the report).


def headless_pyplot():
    """matplotlib.pyplot, on the headless Agg backend except in a Jupyter kernel, where the notebook's own
    backend stays so that figures show inline (imported here: matplotlib is slow to import)."""
    import sys

    import matplotlib  # deferred: matplotlib ~1.5 s to import

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: matplotlib ~1.5 s to import

    return plt


def plot_comparison(cmp):
    """Left: reuse / recombination / novelty per checkpoint (bars: corrected, hatched where the correction
    hit a bound, or raw where no floor corrected them; dots: raw; black dash: the reuse floor). Right: drift of reused features per checkpoint."""
    plt = headless_pyplot()
    s = cmp.summary
    # constrained layout keeps every label and the outside legend inside the figure when it is saved
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    x = np.arange(len(s))
    bottom = np.zeros(len(s))
    nan = np.full(len(s), np.nan)
    for col, color in STATUS_COLORS.items():
        vals = s[col].to_numpy(dtype=float) if col in s else nan
        raw = s[f"{col}_raw"].to_numpy(dtype=float) if f"{col}_raw" in s else nan
        # where no floor corrected the fraction (NaN), the bar is the raw reading and no dot repeats it
        ax0.bar(x, np.where(np.isfinite(vals), vals, raw), bottom=bottom, color=color, label=col, width=0.6)
        dots = np.where(np.isfinite(vals), raw, np.nan)
        ax0.scatter(x + 0.38, dots, color=color, marker="o", s=14, edgecolor="k", linewidth=0.4, zorder=3)
        bottom += np.nan_to_num(np.where(np.isfinite(vals), vals, raw))
    corrected = "reuse" in s and bool(s["reuse"].notna().any())
    if "reuse_floor" in s and s["reuse_floor"].notna().any():  # the reference against its own replicas
        ax0.hlines(
            s["reuse_floor"].to_numpy(dtype=float),
            x + 0.3,
            x + 0.46,
            color="k",
            linewidth=1.5,
            label="reuse floor (base vs base)",
            zorder=4,
        )
    if "saturated" in s:  # a corrected value at a bound is not a measurement: hatch it
        for xi, sat in zip(x, s["saturated"].fillna(False).astype(bool), strict=True):
            if sat:
                ax0.bar(xi, 1.0, width=0.6, fill=False, hatch="//", edgecolor="w", linewidth=0)
    ax0.set_xticks(x, list(s.index))
    ax0.set_ylim(0, 1.05)
    ax0.set_ylabel("fraction of live features")
    how = "dots: raw; hatched: at a bound" if corrected else "raw: no floor to correct by"
    ax0.set_title(f"features vs {cmp.meta.get('reference', 'reference')} ({how})")
    ax0.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the bars
    f = cmp.features
    bins = np.linspace(0, 0.3, 31)
    for name in s.index:
        d = f.loc[(f["checkpoint"] == name) & f["drift"].notna(), "drift"].to_numpy(dtype=float)
        if len(d):
            ax1.hist(
                np.clip(d, 0, 0.3), bins=bins, histtype="step", linewidth=1.5, label=f"{name} (n={len(d)})"
            )
    ax1.set_xlabel("drift = 1 - cosine to the matched base feature\n(reused features)")
    ax1.set_ylabel("features")
    ax1.set_title("drift distribution")
    if ax1.has_data():
        ax1.legend(fontsize=8)
    return fig


def ordered_accuracy(accuracy: pd.DataFrame) -> pd.DataFrame:
    """A lab accuracy table (``featdiff.lab.accuracy``) with rows in the order base, sft, rl (others after)."""
    acc = accuracy.copy()
    if "checkpoint" not in acc:
        acc = acc.reset_index().rename(columns={"index": "checkpoint"})
    names = list(acc["checkpoint"])
    order = [n for n in CHECKPOINT_ORDER if n in names] + [n for n in names if n not in CHECKPOINT_ORDER]
    acc = acc.set_index("checkpoint").loc[order].reset_index()
    acc.attrs = dict(accuracy.attrs)
    return acc


def plot_accuracy(accuracy: pd.DataFrame):
    """Grouped bars of accuracy: left, per task group (in / near / out of domain); right, per task; one bar
    per checkpoint (base, sft, rl)."""
    plt = headless_pyplot()
    acc = ordered_accuracy(accuracy).set_index("checkpoint")
    groups = [g for g in ACCURACY_GROUPS if g in acc]
    task_cols = [c for c in acc.columns if c not in ACCURACY_GROUPS and c not in ("run", "step")]
    fig, axes = plt.subplots(
        1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [max(1, len(groups)), max(1, len(task_cols))]}
    )
    for ax, cols, title in ((axes[0], groups, "by task group"), (axes[1], task_cols, "by task")):
        x = np.arange(len(cols))
        width = 0.8 / max(1, len(acc))
        for i, (name, row) in enumerate(acc.iterrows()):
            ax.bar(
                x + (i - (len(acc) - 1) / 2) * width,
                row[cols].to_numpy(dtype=float),
                width=width,
                label=str(name),
                color=CHECKPOINT_COLORS.get(str(name)),
            )
        # group names wrap onto two lines so neighbours never run together ("near\ndomain")
        ax.set_xticks(x, [c.replace("_", "\n", 1) for c in cols], rotation=0 if len(cols) <= 4 else 30)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.set_title(f"accuracy {title}")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: covers no bar
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


ROLES = ("base", "rl", "sft")


_CATEGORY_COLORS = {"base": "#4C72B0", "rl": "#55A868", "sft": "#C44E52", "shared": "#8C8C8C"}


def plot_mas(mas_table: pd.DataFrame, categories: pd.DataFrame) -> Any:
    """Left: each live feature's MAS (base, rl, sft) in a ternary plot, coloured by category. Right: the
    categories' fractions of live features, one stacked bar per view (3-model MAS, rl vs base, sft vs base).

    Examples
    --------
    >>> m = pd.DataFrame({"feature": [0, 1], "base": [0.5, 0.1], "rl": [0.3, 0.1], "sft": [0.2, 0.8],
    ...                   "dominant": ["base", "sft"], "category": ["shared", "sft"], "dead": [False, False]})
    >>> c = pd.DataFrame({"view": ["base+rl+sft"] * 2, "category": ["shared", "sft"], "n_features": [1, 1], "fraction": [0.5, 0.5]})
    >>> len(plot_mas(m, c).axes)
    2
    """
    from matplotlib.figure import Figure  # deferred: matplotlib ~1.5 s to import

    fig = Figure(figsize=(10, 4))
    ax0, ax1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    live = mas_table[~mas_table["dead"].astype(bool)]
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    ax0.plot(*np.vstack([corners, corners[:1]]).T, color="k", linewidth=0.8)
    for (x, y), name in zip(corners, ROLES, strict=True):
        ax0.annotate(name, (x, y), textcoords="offset points", xytext=(0, -12 if y == 0 else 5), ha="center")
    for i in range(3):  # MAS^m = 0.5 lines: beyond each, the corner's checkpoint owns the feature
        a, b, c = corners[i], corners[(i + 1) % 3], corners[(i + 2) % 3]
        ax0.plot(*np.array([(a + b) / 2, (a + c) / 2]).T, color="k", linewidth=0.5, linestyle=":")
    xy = live[list(ROLES)].to_numpy(dtype=float) @ corners
    for cat, color in _CATEGORY_COLORS.items():
        sel = (live["category"] == cat).to_numpy()
        if sel.any():
            ax0.scatter(
                xy[sel, 0], xy[sel, 1], s=8, color=color, alpha=0.6, label=f"{cat} ({int(sel.sum())})"
            )
    ax0.set_aspect("equal")
    ax0.set_axis_off()
    ax0.set_title("MAS of each live feature")
    if len(live):  # below the triangle, outside the axes: covers no point
        ax0.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
    views = list(dict.fromkeys(categories["view"]))
    x = np.arange(len(views))
    bottom = np.zeros(len(views))
    for cat in ("base", "shared", "rl", "sft"):
        vals = np.array(
            [
                categories.loc[(categories.view == v) & (categories.category == cat), "fraction"].sum()
                for v in views
            ],
            dtype=float,
        )
        ax1.bar(x, np.nan_to_num(vals), bottom=bottom, color=_CATEGORY_COLORS[cat], label=cat, width=0.6)
        bottom += np.nan_to_num(vals)
    ax1.set_xticks(x, views)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("fraction of live features")
    ax1.set_title("feature categories (MAS > 0.5; NRN shared band)")
    ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: covers no bar
    fig.tight_layout()
    return fig


def plot_nrn(nrn_table: pd.DataFrame) -> Any:
    """Histograms of NRN (n^T / (n^base + n^T)) of the live features, one panel per checkpoint.

    Examples
    --------
    >>> t = pd.DataFrame({"checkpoint": ["rl", "sft"], "feature": [0, 0], "nrn": [0.5, 0.9], "dead": [False, False]})
    >>> len(plot_nrn(t).axes)
    2
    """
    from matplotlib.figure import Figure  # deferred: matplotlib ~1.5 s to import

    names = list(dict.fromkeys(nrn_table["checkpoint"]))
    fig = Figure(figsize=(4 * max(1, len(names)), 3.2))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(names)), sharey=True))
    bins = np.linspace(0, 1, 26)
    for ax, name in zip(axes, names, strict=False):
        v = nrn_table.loc[(nrn_table.checkpoint == name) & ~nrn_table["dead"].astype(bool), "nrn"].dropna()
        ax.hist(v.to_numpy(dtype=float), bins=bins, color=_CATEGORY_COLORS.get(name, "#4C72B0"))
        ax.set(title=f"{name} vs base (n={len(v)})", xlabel=f"NRN = n^{name} / (n^base + n^{name})")
    axes[0].set_ylabel("live features")
    fig.tight_layout()
    return fig


def plot_interventions(table: pd.DataFrame) -> Any:
    """Accuracy per task and subset under no edit, the edit, and random controls; one panel per edit.

    Examples
    --------
    >>> t = pd.DataFrame({"edit": "ablate_in_rl", "condition": ["none", "edit"], "subset": "full",
    ...                   "task": "a", "accuracy": [0.9, 0.5]})
    >>> len(plot_interventions(t).axes)
    1
    """
    from matplotlib.figure import Figure  # deferred: matplotlib ~1.5 s to import

    edits = list(dict.fromkeys(table["edit"]))
    fig = Figure(figsize=(5.5 * max(1, len(edits)), 3.5))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(edits)), sharey=True))
    colors = {"none": "#8C8C8C", "edit": "#C44E52", "random": "#4C72B0"}
    for ax, e in zip(axes, edits, strict=False):
        t = table[table["edit"] == e]
        groups = list(dict.fromkeys(zip(t["task"], t["subset"], strict=True)))
        x = np.arange(len(groups))
        for i, cond in enumerate(("none", "edit", "random")):
            vals = [
                t.loc[(t.task == g[0]) & (t.subset == g[1]) & (t.condition == cond), "accuracy"].mean()
                for g in groups
            ]
            ax.bar(
                x + (i - 1) * 0.27,
                np.nan_to_num(np.asarray(vals, dtype=float)),
                0.27,
                color=colors[cond],
                label=cond,
            )
        ax.set_xticks(x, [f"{a}\n{b}" for a, b in groups], fontsize=7)
        ax.set(title=e, ylim=(0, 1.05))
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # one, outside: covers no bar
    axes[0].set_ylabel("accuracy")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ evolution
