"""The one-file HTML report of a comparison (the demo's and `featdiff compare`'s output).

``write_html_report`` puts a Comparison, a lab's accuracy table and (optionally) a crosscoder view into one
self-contained HTML file: figures embedded as base64 PNG, tables as HTML, no external assets.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path

import pandas as pd

from featdiff._version import __version__
from featdiff.errors import group_messages
from featdiff.metrics.uncertainty import INTERVAL_LEVEL
from featdiff.report.card_html import report_section
from featdiff.report.compact import summary_key_table, view_tables
from featdiff.report.figures import (
    ACCURACY_GROUPS,
    CHECKPOINT_ORDER,
    figure_png,
    headless_pyplot,
    ordered_accuracy,
    plot_accuracy,
    plot_comparison,
)
from featdiff.report.quality_html import quality_section

KEY_FEATURE_COLUMNS = ["reuse", "recombination", "novelty", "drift", "transfer_fve"]
EXPLANATIONS = {
    "in_domain": "accuracy (in [0, 1]) on the task post-training used",
    "near_domain": "mean accuracy on tasks close to the post-training task (held out)",
    "out_of_domain": "mean accuracy on unrelated tasks held out from post-training; a drop from the base's is "
    "forgetting",
    "reuse": "fraction of the checkpoint's live SAE features that match a base feature (cosine >= 0.7), "
    "corrected by the noise floor (empty where no floor was measured: no replicas); reuse_raw is the measured "
    "fraction, reuse_floor the same number for a second base SAE (another seed)",
    "recombination": "fraction fitted by 2-3 base features (cosine >= 0.9, at least 0.15 better than the best single one)",
    "novelty": "fraction that is neither reused nor recombined: new features (reuse + recombination + "
    "novelty = 1)",
    "drift": "mean 1 - cosine between a reused feature and its matched base feature (lower: less moved)",
    "transfer_fve": "fraction of the checkpoint's activation variance that the base SAE explains "
    "(SAE transfer; compare with reference_fve, the same on the base's own activations)",
    "freq_shift": "mean |log ratio| of a reused feature's firing frequency to its base feature's",
    "base_coverage": "fraction of the base's scored features that are reused in the checkpoint",
    "noise_floor_reuse": "reuse between two base SAEs trained on the same data with different seeds (q): how "
    "much SAE noise alone leaves unmatched; the correction divides raw fractions by it (= reuse_floor)",
    "*_raw": "the fractions before the noise-floor correction",
    "*_floor": "the same number measured base against base (the reference SAE against its replicas trained "
    "with other seeds, mean over replicas): what SAE noise alone gives",
    "*_lo": "lower end of the number's interval (level in the report's notes; from replica SAEs and a "
    "bootstrap over features and tokens)",
    "*_hi": "upper end of the number's interval",
    "indistinguishable_from_reference": "True where the raw reuse is not below the floor beyond noise (the "
    "interval of raw reuse minus the floor reaches 0 or above): the data cannot tell this checkpoint's features "
    "from the base's",
    "saturated": "True where the correction hit a bound (the corrected value is a bound, not a measurement; "
    "read the raw value)",
    "interval_saturated": "True where an end of a corrected interval hit a bound (that end is a bound)",
    "uncorrected": "True where there is no corrected reading (no replicas, or no finite correction): the "
    "corrected columns are empty and the *_raw ones carry the reading",
    "split": "fraction of scored features that near-duplicate a base feature already matched to another feature "
    "(counted in reuse)",
}
INTERVAL_COLUMNS = [
    "reuse",
    "recombination",
    "novelty",
    "base_coverage",
    "drift",
    "freq_shift",
    "transfer_fve",
]
"""Summary columns that carry ``<col>_lo`` / ``<col>_hi`` intervals and a ``<col>_floor`` (docs/design.md)."""


def _key_columns(s: pd.DataFrame) -> list[str]:
    """Each key number with what must stand beside it: raw value, floor, interval (those present)."""
    cols = []
    for c in KEY_FEATURE_COLUMNS:
        cols += [x for x in (f"{c}_raw", f"{c}_floor", c, f"{c}_lo", f"{c}_hi") if x in s]
    flags = ("saturated", "interval_saturated", "uncorrected", "indistinguishable_from_reference")
    cols += [c for c in flags if c in s]
    return cols


def key_table(comparison, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per checkpoint (base, sft, rl, ...): in / near / out-of-domain accuracy (if ``accuracy``)
    beside the feature numbers reuse, recombination, novelty, drift, transfer_fve of the comparison, each
    with its raw value (``*_raw``), base-vs-base floor (``*_floor``) and interval (``*_lo``, ``*_hi``) where
    the summary has them (NaN for the reference, which they are measured against)."""
    s = comparison.summary
    feats = s[_key_columns(s)]
    reference = comparison.meta.get("reference", "base")
    names = [reference, *[n for n in s.index if n != reference]]
    if accuracy is not None:
        acc = ordered_accuracy(accuracy).set_index("checkpoint")
        acc = acc[[g for g in ACCURACY_GROUPS if g in acc]]
        names = list(acc.index) + [n for n in names if n not in acc.index]
    else:
        acc = pd.DataFrame(index=pd.Index(names))
        names = [n for n in CHECKPOINT_ORDER if n in names] + [n for n in names if n not in CHECKPOINT_ORDER]
    out = acc.reindex(names).join(feats.reindex(names))
    out.index.name = "checkpoint"
    return out


def _f(v, digits: int = 3) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(v) else f"{v:.{digits}f}"


def _get(row: pd.Series, col: str) -> float:
    try:
        return float(row[col]) if col in row.index else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _floor(row: pd.Series, col: str) -> float:
    v = _get(row, f"{col}_floor")
    if not math.isfinite(v) and col == "reuse":  # an older Comparison: only noise_floor_reuse
        v = _get(row, "noise_floor_reuse")
    return v


def _with_interval(row: pd.Series, col: str) -> str:
    lo, hi = _get(row, f"{col}_lo"), _get(row, f"{col}_hi")
    value = _f(row.get(col))
    if value != "-" and col in ("reuse", "recombination", "novelty") and _flag(row, "saturated"):
        value += "*"
    if math.isfinite(lo) and math.isfinite(hi):
        clipped = col in ("reuse", "recombination", "novelty") and _flag(row, "interval_saturated")
        return f"{value} [{lo:.2f}, {hi:.2f}]" + ("*" if clipped else "")
    return f"{value} [n/a]" if value != "-" else value


def _flag(row: pd.Series, col: str) -> bool | None:
    if col not in row.index or pd.isna(row[col]):
        return None
    v = row[col]
    return str(v).strip().lower() in ("true", "1", "1.0") if isinstance(v, str) else bool(v)


def interval_level(comparison) -> float | None:
    """The level of the summary's ``*_lo`` / ``*_hi`` intervals, from the comparison:
    ``meta["interval_level"]``, else its config's (``meta["config"]["interval_level"]``), else CompareConfig's
    default (``INTERVAL_LEVEL``, featdiff.metrics.uncertainty); None when the summary has no intervals (a
    Comparison from before they existed).

    Examples
    --------
    >>> import pandas as pd
    >>> from featdiff.comparison.table import Comparison
    >>> summary = pd.DataFrame({"reuse": [0.5], "reuse_lo": [0.4], "reuse_hi": [0.6]}, index=["rl"])
    >>> interval_level(Comparison(summary, pd.DataFrame(), meta={"config": {"interval_level": 0.8}}))
    0.8
    >>> interval_level(Comparison(summary[["reuse"]], pd.DataFrame())) is None
    True
    """
    s = comparison.summary
    if not any(f"{c}_lo" in s for c in INTERVAL_COLUMNS):
        return None
    meta = comparison.meta or {}
    level = meta.get("interval_level", (meta.get("config") or {}).get("interval_level"))
    return float(INTERVAL_LEVEL if level is None else level)  # CompareConfig.interval_level's default


def key_table_text(comparison) -> pd.DataFrame:
    """The key feature numbers as text, one column per compared checkpoint: every corrected fraction beside
    its raw value and its base-vs-base floor, every number with its interval (``[lo, hi]``, or ``[n/a]``
    where this Comparison has none), a ``*`` where a correction hit a bound (``saturated``), and whether the
    data can tell the checkpoint from the reference."""
    s = comparison.summary
    corrected = any(math.isfinite(_floor(row, "reuse")) for _, row in s.iterrows())
    rows: dict[str, dict[str, str]] = {}
    for name, row in s.iterrows():
        col: dict[str, str] = {}
        for c in ("reuse", "recombination", "novelty"):
            if c not in s:
                continue
            if f"{c}_raw" in s and corrected:
                raw = f"{c}_raw"
                col[f"{c}, raw"] = _with_interval(row, raw) if f"{raw}_lo" in s else _f(row[raw])
                floor = _floor(row, c)
                if math.isfinite(floor) or c == "reuse":
                    col[f"{c}, floor (base vs base)"] = _f(floor)
                col[f"{c}, corrected"] = _with_interval(row, c)
            elif f"{c}_raw" in s:  # no floor: no corrected reading (NaN), the raw one only
                raw = f"{c}_raw"
                col[f"{c}, raw (no floor)"] = _with_interval(row, raw) if f"{raw}_lo" in s else _f(row[raw])
            else:  # an older Comparison: one column per fraction
                col[c] = _with_interval(row, c)
        if "split" in s:
            col["split (in reuse)"] = _f(row["split"])
        for c in ("drift", "transfer_fve"):
            if c in s:
                col[c] = _with_interval(row, c)
                if f"{c}_floor" in s:
                    col[f"{c}, floor (base vs base)"] = _f(row[f"{c}_floor"])
        verdict = _flag(row, "indistinguishable_from_reference")
        col[f"vs {comparison.meta.get('reference', 'base')}"] = (
            "not tested (no floor interval)"
            if verdict is None
            else ("indistinguishable" if verdict else "distinguishable")
        )
        rows[str(name)] = col
    out = pd.DataFrame(rows)
    out.index.name = "quantity"
    return out


def findings(comparison, accuracy: pd.DataFrame | None = None) -> list[str]:
    """Sentences about this run, each derived from its own numbers (raw, floor, interval): no conclusion
    that the run did not measure. One or two sentences per compared checkpoint, and the accuracy groups of
    every checkpoint when ``accuracy`` is given.

    Examples
    --------
    >>> import pandas as pd, types
    >>> s = pd.DataFrame({"reuse": [1.0], "reuse_raw": [0.42], "noise_floor_reuse": [0.42], "recombination": [0.0],
    ...                   "novelty": [0.0]}, index=pd.Index(["rl"], name="checkpoint"))
    >>> findings(types.SimpleNamespace(summary=s, meta={"reference": "base"}))[0][:60]
    'rl: raw reuse 0.420 (interval not available in this Comparis'
    """
    s, meta = comparison.summary, comparison.meta
    ref = meta.get("reference", "base")
    level = interval_level(comparison)
    lvl = f"{level:.0%}" if level is not None else None
    out = []
    n_ref, live_ref = meta.get("reference_n_features"), meta.get("reference_n_scored")
    if n_ref is not None and live_ref is not None:
        fve = _get(s.iloc[0], "reference_fve") if len(s) else float("nan")
        tokens = meta.get("n_eval_tokens")
        out.append(
            f"{ref} (reference): {int(live_ref):,} of its dictionary's {int(n_ref):,} latents fired"
            + (f" on the {int(tokens):,} evaluation tokens" if tokens else "")
            + f" ({int(n_ref) - int(live_ref):,} dead)"
            + (f"; it explains {fve:.3f} of its own activations' variance" if math.isfinite(fve) else "")
            + "."
        )
    for name, row in s.iterrows():
        raw, floor = _get(row, "reuse_raw"), _floor(row, "reuse")
        if not math.isfinite(raw):
            raw = _get(row, "reuse")
        lo, hi = _get(row, "reuse_raw_lo"), _get(row, "reuse_raw_hi")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = _get(row, "reuse_lo"), _get(row, "reuse_hi")
            iv_of = "corrected reuse"
        else:
            iv_of = "raw reuse"
        iv = (
            f" ({lvl} interval of the {iv_of} {lo:.2f}-{hi:.2f})"
            if lvl and math.isfinite(lo) and math.isfinite(hi)
            else " (interval not available in this Comparison)"
        )
        fl = (
            f"against a base-vs-base floor of {floor:.3f}"
            if math.isfinite(floor)
            else "with no floor measured (no replica of the base SAE)"
        )
        verdict = _flag(row, "indistinguishable_from_reference")
        if verdict is True:
            tail = (
                f": the data cannot tell {name}'s features from {ref}'s (indistinguishable_from_reference)."
            )
        elif verdict is False:  # indistinguishable_from_reference: the interval of raw reuse - floor reaches 0
            tail = (
                f": below the floor beyond noise (the {lvl or 'whole'} interval of raw reuse minus the floor lies under 0), "
                f"so {name} differs from {ref} beyond SAE noise."
            )
        else:
            tail = f"; whether {name} differs from {ref} beyond SAE noise was not tested (no floor interval)."
        sentence = f"{name}: raw reuse {raw:.3f}{iv} {fl}{tail}"
        if math.isfinite(floor):
            parts = [
                f"{c} {_f(row[c])}" + (f" (raw {_f(row[c + '_raw'])})" if f"{c}_raw" in s else "")
                for c in ("reuse", "recombination", "novelty")
                if c in s
            ]
            if parts:
                sentence += " Corrected by the floor: " + ", ".join(parts) + "."
                if _flag(row, "saturated"):
                    sentence += " The correction hit a bound (saturated): read the raw values."
        else:
            parts = [
                f"{c} {_f(row[c + '_raw'] if c + '_raw' in s else row[c])}"
                for c in ("reuse", "recombination", "novelty")
                if c in s
            ]
            if parts:
                sentence += " Fractions, uncorrected (no floor): " + ", ".join(parts) + "."
        means = []
        for c in ("drift", "transfer_fve"):
            v = _get(row, c)
            if math.isfinite(v):
                f_ = _get(row, f"{c}_floor")
                means.append(f"{c} {v:.3f}" + (f" (floor {f_:.3f})" if math.isfinite(f_) else " (no floor)"))
        if means:
            sentence += " Means: " + ", ".join(means) + "."
        out.append(sentence)
    if accuracy is not None:
        acc = ordered_accuracy(accuracy).set_index("checkpoint")
        for g in [g for g in ACCURACY_GROUPS if g in acc]:
            vals = ", ".join(f"{n} {_f(v)}" for n, v in acc[g].items())
            out.append(f"{g.replace('_', '-')} accuracy: {vals}.")
    return out


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, max_rows: int = 40, index: bool = True, note: str = "") -> str:
    n = len(df)
    shown = df.head(max_rows)
    body = shown.to_html(
        index=index, float_format=lambda v: f"{v:.3f}", na_rep="—", border=0, classes="t", escape=True
    )
    body = f'<div class="scroll">{body}</div>'  # wide tables scroll inside the page instead of overflowing it
    if n > max_rows:
        body += f'<p class="note">First {max_rows} of {n} rows{note}.</p>'
    return body


def _explain(columns) -> str:
    items = []
    for c in columns:
        suffix = next((x for x in ("_raw", "_floor", "_lo", "_hi") if str(c).endswith(x)), None)
        key = f"*{suffix}" if suffix and str(c) not in EXPLANATIONS else str(c)
        if key in EXPLANATIONS:
            label = key if key.startswith("*") else str(c)
            items.append(f"<dt>{html.escape(label)}</dt><dd>{html.escape(EXPLANATIONS[key])}</dd>")
    return f"<dl>{''.join(dict.fromkeys(items))}</dl>" if items else ""


def _held_out(meta: dict) -> str:
    n_eval = meta.get("n_eval_tokens")
    return f" ({n_eval} of them held out for scoring)" if n_eval and "n_tokens" in meta else ""


def _warnings_html(meta: dict) -> str:
    """The run's diagnostics (``meta["warnings"]``, written by ``featdiff.comparison.diagnostics``), or a line saying
    there were none or that this Comparison predates them."""
    if "warnings" not in meta:
        return '<p class="note">Diagnostics: not recorded in this Comparison.</p>'
    items = meta.get("warnings") or []
    if not items:
        return '<p class="note">Diagnostics: no warning (dead latents, noise floor, tokens, training).</p>'
    return (
        "<h3>Warnings: where these numbers are weak</h3><ul>"
        + "".join(f"<li>{html.escape(w)}</li>" for w in group_messages([str(w) for w in items]))
        + "</ul>"
    )


def width_check_table(meta: dict) -> pd.DataFrame:
    """One row per round of the width check (``meta["width_check"]``, written by ``compare_activations`` /
    ``compare_checkpoints``): round, d_sae, the reference's scored share, its FVE and the probe's, the
    unexplained-variance reduction, the decision, the seconds it took and, per target, reuse /
    recombination / novelty at that width. Empty when no check ran.

    Examples
    --------
    >>> rounds = [{"round": 0, "d_sae": 32, "train_s": 1.0, "score_s": 0.5, "probe_s": 0.5, "wall_s": 2.0,
    ...            "summary": {"rl": {"reuse": 0.5, "recombination": 0.1, "novelty": 0.4}},
    ...            "reference_scored_share": 1.0, "unexplained_reduction": 0.4, "decision": "widen to d_sae 64"}]
    >>> t = width_check_table({"width_check": rounds})
    >>> print(t[["d_sae", "wall_s", "decision", "rl: reuse / recomb. / novelty"]].to_string(index=False))
     d_sae  wall_s          decision rl: reuse / recomb. / novelty
        32     2.0 widen to d_sae 64         0.500 / 0.100 / 0.400
    """
    rows = []
    for r in meta.get("width_check") or []:
        row = {
            "round": r.get("round"),
            "d_sae": r.get("d_sae"),
            "reference_scored_share": r.get("reference_scored_share"),
            "reference_fve": r.get("reference_fve"),
            "probe_fve": r.get("probe_fve"),
            "unexplained_reduction": r.get("unexplained_reduction"),
            "decision": r.get("decision"),
            "wall_s": r.get("wall_s"),
        }
        for target, v in (r.get("summary") or {}).items():
            row[f"{target}: reuse / recomb. / novelty"] = " / ".join(
                _f(v.get(c)) for c in ("reuse", "recombination", "novelty")
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _width_check_html(meta: dict) -> str:
    t = width_check_table(meta)
    if t.empty:
        return ""
    cfg = meta.get("width_check_config") or {}
    limits = (
        f" Thresholds: a probe {cfg.get('factor', 2)}x as wide when the reference's scored share is at least "
        f"{cfg.get('min_scored')}; widen when it cuts the unexplained variance by at least "
        f"{cfg.get('min_reduction')}"
        + (" or the narrow-reference check fires" if cfg.get("narrow_reference", True) else "")
        + "."
        if cfg
        else ""
    )
    return (
        "<h3>Width check</h3><p>Each round of the width check: the width the SAEs were trained at, what the "
        "check measured and decided, the seconds the round took (training, scoring, probe) and the readings "
        "at that width (the tables above are the last round's)." + html.escape(limits) + "</p>"
        + _table(t, index=False)
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.t th,table.t td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f6f6f6;overflow-wrap:anywhere}
img{max-width:100%;margin:.5em 0}
.scroll{overflow-x:auto;max-width:100%}
dl{font-size:.85em;color:#444;display:grid;grid-template-columns:fit-content(16em) 1fr;gap:.15em 1em}
dt{font-weight:600;overflow-wrap:anywhere}dd{margin:0}
details{margin:.5em 0}summary{cursor:pointer;color:#444;font-size:.9em}
.note{font-size:.8em;color:#666}code{background:#f3f3f3;padding:0 .2em}
"""


def write_html_report(
    path: str | os.PathLike,
    comparison,
    accuracy: pd.DataFrame | None = None,
    view=None,
    title: str = "featdiff report: what post-training did to the features",
    figures: dict | None = None,
    cards: int = 5,
) -> Path:
    """Write one self-contained HTML file (no external assets) with the comparison, the accuracy and the
    crosscoder view: the key table, every table as HTML, every figure as an embedded base64 PNG and a short
    explanation of each number. ``figures`` (optional) maps names to matplotlib figures or PNG bytes
    already drawn (``"comparison"``, ``"accuracy"``, ``"crosscoder_<key>"``); missing ones are drawn here.
    ``cards``: how many features per group (most novel, drifted, recombined) the feature-card section shows
    per checkpoint (``featdiff.report.card_html.report_section``; 0 leaves the section out).
    The file is written through a temporary name.

    Examples
    --------
    >>> import tempfile, torch, featdiff as fd
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> saes = {"base": sae_from_dictionary(torch.eye(8), k=2), "rl": sae_from_dictionary(torch.eye(8), k=2)}
    >>> cmp = fd.compare_dictionaries(saes, progress=False)
    >>> p = write_html_report(tempfile.mkdtemp() + "/report.html", cmp)
    >>> "data:image/png;base64," in p.read_text()
    True
    """
    plt = headless_pyplot()
    figures = dict(figures or {})
    png: dict[str, bytes] = {}

    def get(name: str, make) -> bytes:
        fig = figures.get(name)
        if isinstance(fig, (bytes, bytearray)):
            return bytes(fig)
        own = fig is None
        fig = make() if own else fig
        out = figure_png(fig)
        if own:
            plt.close(fig)
        return out

    png["comparison"] = get("comparison", lambda: plot_comparison(comparison))
    if accuracy is not None:
        png["accuracy"] = get("accuracy", lambda: plot_accuracy(accuracy))
    if view is not None:
        for name, fig in view.figures.items():
            png[f"crosscoder_{name}"] = get(f"crosscoder_{name}", lambda fig=fig: fig)

    meta = comparison.meta
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Each post-trained checkpoint's sparse features are aligned to the base model's and sorted into "
        "<b>reused</b> (kept, maybe moved a little), <b>recombined</b> (built from a few base features) and "
        "<b>novel</b>. Every fraction stands beside its raw value and its floor: the same number for a second "
        "base SAE trained with another seed, which is what SAE noise alone gives.</p>",
        '<p class="note">'
        + html.escape(
            f"reference: {meta.get('reference', 'base')} · hook: {meta.get('hook')} · method: "
            f"{meta.get('method', 'saes')} · tokens: {meta.get('n_tokens', meta.get('n_eval_tokens'))}"
            f"{_held_out(meta)} · "
            f"seed: {meta.get('seed')} · featdiff {__version__}"
        )
        + "</p>",
        "<h2>What this run measured</h2>",
        "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in findings(comparison, accuracy)) + "</ul>",
        _warnings_html(meta),
        "<h2>Key table</h2>",
        _table(key_table_text(comparison)),
        '<p class="note">'
        + html.escape(
            (
                f"Brackets: {interval_level(comparison):.0%} intervals."
                if interval_level(comparison) is not None
                else "[n/a]: this Comparison has no intervals (no replica SAEs, or made by an older featdiff)."
            )
            + " *: the correction hit a bound (saturated; after the brackets: an interval end did,"
            " interval_saturated); read the raw value."
        )
        + "</p>",
        _explain([*KEY_FEATURE_COLUMNS, "noise_floor_reuse"]),
    ]
    parts.append(quality_section(meta))  # each checkpoint's SAE quality (featdiff.comparison.quality)
    if accuracy is not None:
        acc = ordered_accuracy(accuracy)
        parts += [
            "<h2>Accuracy</h2>",
            "<p>Fraction of correct answers per task (greedy decoding) of each checkpoint; the group columns "
            "are means over the tasks of the group.</p>",
            _img(png["accuracy"], "accuracy per task group and task"),
            _table(acc, index=False),
            _explain(ACCURACY_GROUPS),
        ]
        groups = acc.attrs.get("groups")
        if groups:
            parts.append(
                '<p class="note">Task groups: '
                + html.escape(", ".join(f"{t}: {g}" for t, g in groups.items()))
                + "</p>"
            )
    s = comparison.summary
    parts += [
        "<h2>Features: the comparison</h2>",
        "<p>Left: the status of each checkpoint's scored features (bars corrected by the noise floor, dots "
        "raw). Right: how far reused features moved from their base feature.</p>",
        _img(png["comparison"], "feature status and drift"),
        _table(summary_key_table(s)),
        f"<details><summary>All {s.shape[1]} summary columns (also in summary.csv)</summary>",
        _table(s),
        _explain(s.columns),
        "</details>",
        _explain(summary_key_table(s).columns),
        _width_check_html(meta),
    ]
    f = comparison.features
    if "status" in f and len(f):
        counts = f.groupby(["checkpoint", "status"], observed=False).size().unstack(fill_value=0)
        parts += ["<h3>Feature counts by status</h3>", _table(counts)]
    if view is not None:
        parts += [
            "<h2>Crosscoder view</h2>",
            "<p>One crosscoder trained on the base, rl and sft activations together: each feature has one "
            "decoder per checkpoint. MAS (share of a feature's decoder norm per checkpoint) says whose "
            "feature it is (specific when above 0.5, else shared); NRN = n<sup>T</sup> / (n<sup>base</sup> + "
            "n<sup>T</sup>) compares a checkpoint with the base; evolution follows the features across "
            "intermediate checkpoints; interventions switch the generalization features off in rl or "
            "amplify them in base and measure the accuracy on samples that took no part in choosing them. "
            "Their p_value is empirical against random control edits (p_min: the smallest the controls "
            "allow); p_holm adjusts it for the n_tests tests of its subset (Holm).</p>",
        ]
        for name in view.figures:
            parts.append(_img(png[f"crosscoder_{name}"], f"crosscoder view: {name}"))
        for name, table, note in view_tables(view.tables):
            parts += [
                f"<h3>{html.escape(name)}</h3>",
                _table(table, max_rows=25, index=False, note=note) if len(table) else '<p class="note">(empty)</p>',
            ]
        notes = view.meta.get("notes") or []
        if notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
    if cards:
        parts.append(report_section(comparison, n=cards))  # feature cards (featdiff.report.cards)
    parts += [
        '<p class="note">Written by featdiff. The full tables are next to this file: summary.csv, '
        "features.parquet, accuracy.csv, meta.json.</p>",
        "</body></html>",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
