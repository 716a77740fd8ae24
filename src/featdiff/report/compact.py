"""The report's readable tables: a comparison's summary as its key columns, and the crosscoder view's tables
as a reader scans them (live features, one row per intervention test). The full tables stay in the CSV
files beside the report and, for the summary, behind a ``<details>`` in it (featdiff.report.html)."""

from __future__ import annotations

import pandas as pd

# the summary's columns the report shows first, in this order (those present); the rest sit behind <details>
SUMMARY_KEY_COLUMNS = [
    "reuse_raw",
    "reuse_floor",
    "reuse",
    "recombination",
    "novelty",
    "drift",
    "transfer_fve",
    "n_scored",
    "n_dead",
    "indistinguishable_from_reference",
]


def summary_key_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's key columns (``SUMMARY_KEY_COLUMNS`` present in it; where no floor corrected the fractions,
    so that the corrected columns are all NaN, the raw ones in their place).

    Examples
    --------
    >>> s = pd.DataFrame({"reuse": [float("nan")], "reuse_raw": [0.4], "recombination": [float("nan")],
    ...                   "recombination_raw": [0.1], "novelty": [float("nan")], "novelty_raw": [0.5],
    ...                   "drift": [0.2], "n_scored": [30], "split": [0.0]}, index=["rl"])
    >>> list(summary_key_table(s).columns)
    ['reuse_raw', 'recombination_raw', 'novelty_raw', 'drift', 'n_scored']
    """
    cols = list(SUMMARY_KEY_COLUMNS)
    if "reuse" not in summary or summary["reuse"].isna().all():
        cols = [c for c in cols if c not in ("reuse", "reuse_floor")]
        cols = [*cols[:1], "recombination_raw", "novelty_raw", *cols[1:]]
        cols = [c for c in cols if c not in ("recombination", "novelty")]
    return summary[[c for c in cols if c in summary]]


def live_features_table(mas: pd.DataFrame, nrn: pd.DataFrame | None = None, n: int | None = None) -> pd.DataFrame:
    """The crosscoder's live features (``mas`` rows with ``dead`` False), one row each: the MAS per
    checkpoint, the category and the NRN against the base per target (``nrn_<checkpoint>``), the most
    checkpoint-specific first (highest MAS outside the base); at most ``n`` rows (None: all).

    Examples
    --------
    >>> mas = pd.DataFrame({"feature": [0, 1, 2], "base": [.5, .3, .1], "rl": [.5, .6, .1], "sft": [0, .1, .8],
    ...                     "dominant": ["base", "rl", "sft"], "category": ["shared", "rl", "sft"],
    ...                     "dead": [False, True, False]})
    >>> live_features_table(mas)["feature"].tolist()
    [2, 0]
    """
    live = mas.loc[~mas["dead"].astype(bool)].drop(columns=["dead"]) if "dead" in mas else mas
    names = [c for c in live.columns if c not in ("feature", "dominant", "category")]
    if nrn is not None and len(nrn):
        wide = nrn.pivot_table(index="feature", columns="checkpoint", values="nrn", aggfunc="first")
        wide.columns = [f"nrn_{c}" for c in wide.columns]
        live = live.merge(wide, left_on="feature", right_index=True, how="left")
    others = [c for c in names if c != "base"] or names
    order = live[others].max(axis=1).sort_values(ascending=False, kind="stable").index
    out = live.loc[order].reset_index(drop=True)
    return out if n is None else out.head(n)


def interventions_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per intervention test (edit, task, subset): accuracy without the edit, with it and under the
    matched random controls (their mean), n, the number of controls and the edit's p_value and p_holm.

    Examples
    --------
    >>> t = pd.DataFrame({"edit": ["ablate"] * 3, "model": ["rl"] * 3, "task": ["sort"] * 3,
    ...                   "subset": ["critical"] * 3, "condition": ["none", "edit", "random"],
    ...                   "accuracy": [1.0, 0.2, 0.9], "n": [18] * 3, "n_controls": [20] * 3,
    ...                   "p_value": [None, 0.048, None], "p_holm": [None, 0.19, None]})
    >>> interventions_summary(t).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'edit': 'ablate', 'model': 'rl', 'task': 'sort', 'subset': 'critical', 'n': 18, 'accuracy_before': 1.0,
     'accuracy_edited': 0.2, 'accuracy_controls': 0.9, 'n_controls': 20, 'p_value': 0.048, 'p_holm': 0.19}
    """
    keys = [c for c in ("edit", "model", "task", "subset") if c in table]
    acc = table.pivot_table(index=keys, columns="condition", values="accuracy", aggfunc="first", sort=False)
    acc = acc.rename(columns={"none": "accuracy_before", "edit": "accuracy_edited", "random": "accuracy_controls"})
    edited = table[table["condition"] == "edit"].set_index(keys)
    out = pd.DataFrame(index=acc.index)
    out["n"] = edited["n"] if "n" in edited else pd.NA
    for c in ("accuracy_before", "accuracy_edited", "accuracy_controls"):
        out[c] = acc[c] if c in acc else float("nan")
    for c in ("n_controls", "p_value", "p_holm"):
        if c in edited:
            out[c] = edited[c]
    return out.reset_index()


def view_tables(tables: dict) -> list[tuple[str, pd.DataFrame, str]]:
    """The crosscoder view's tables as the report shows them: (title, table, note on the rows left out).
    Its MAS and NRN tables become one table of live features, its interventions one row per test."""
    out = []
    if "mas" in tables:
        mas, nrn = tables["mas"], tables.get("nrn")
        live = live_features_table(mas, nrn)
        n_live = int((~mas["dead"].astype(bool)).sum()) if "dead" in mas else len(mas)
        out.append(
            (f"live features ({n_live} of {len(mas)}), the most checkpoint-specific first", live,
             f"; all {len(mas)} features in crosscoder/mas.csv and nrn.csv")
        )  # fmt: skip
    for name, table in tables.items():
        if name in ("mas", "nrn"):
            continue
        if name == "interventions" and len(table) and "condition" in table:
            table = interventions_summary(table)
        out.append((name.replace("_", " "), table, f"; all of them in crosscoder/{name}.csv"))
    return out
