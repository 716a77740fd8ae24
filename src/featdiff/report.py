"""The one-file HTML report of a comparison (the demo's and `featdiff compare`'s output).

``write_html_report`` puts a Comparison, a lab's accuracy table and (optionally) a crosscoder view into one
self-contained HTML file: figures embedded as base64 PNG, tables as HTML, no external assets.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import pandas as pd

from featdiff._version import __version__
from featdiff.figures import (
    ACCURACY_GROUPS,
    CHECKPOINT_ORDER,
    figure_png,
    headless_pyplot,
    ordered_accuracy,
    plot_accuracy,
    plot_comparison,
)

KEY_FEATURE_COLUMNS = ["reuse", "recombination", "novelty", "drift", "transfer_fve"]
EXPLANATIONS = {
    "in_domain": "accuracy (in [0, 1]) on the task post-training used",
    "near_domain": "mean accuracy on tasks close to the post-training task (held out)",
    "out_of_domain": "mean accuracy on unrelated tasks the base model already solves: forgetting shows here",
    "reuse": "fraction of the checkpoint's live SAE features that match a base feature (cosine >= 0.7), "
    "corrected by the noise floor",
    "recombination": "fraction fitted by 2-3 base features (orthogonal matching pursuit, cosine >= 0.9)",
    "novelty": "fraction that is neither reused nor recombined: new features (reuse + recombination + "
    "novelty = 1)",
    "drift": "mean 1 - cosine between a reused feature and its matched base feature (lower: less moved)",
    "transfer_fve": "fraction of the checkpoint's activation variance that the base SAE explains "
    "(SAE transfer; compare with reference_fve, the same on the base's own activations)",
    "freq_shift": "mean |log ratio| of a reused feature's firing frequency to its base feature's",
    "base_coverage": "fraction of the base's live features that are reused in the checkpoint",
    "noise_floor_reuse": "reuse between two base SAEs trained with different seeds: the most reuse a "
    "checkpoint identical to the base would show, used to correct the fractions",
    "*_raw": "the fractions before the noise-floor correction",
}


def key_table(comparison, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per checkpoint (base, sft, rl, ...): in / near / out-of-domain accuracy (if ``accuracy``)
    beside the feature numbers reuse, recombination, novelty, drift, transfer_fve of the comparison (NaN
    for the reference, which they are measured against)."""
    s = comparison.summary
    feats = s[[c for c in KEY_FEATURE_COLUMNS if c in s]]
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


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, max_rows: int = 40, index: bool = True, note: str = "") -> str:
    n = len(df)
    shown = df.head(max_rows)
    body = shown.to_html(
        index=index, float_format=lambda v: f"{v:.3f}", na_rep="—", border=0, classes="t", escape=True
    )
    if n > max_rows:
        body += f'<p class="note">First {max_rows} of {n} rows{note}.</p>'
    return body


def _explain(columns) -> str:
    items = []
    for c in columns:
        key = "*_raw" if str(c).endswith("_raw") else str(c)
        if key in EXPLANATIONS:
            label = key if key == "*_raw" else str(c)
            items.append(f"<dt>{html.escape(label)}</dt><dd>{html.escape(EXPLANATIONS[key])}</dd>")
    return f"<dl>{''.join(dict.fromkeys(items))}</dl>" if items else ""


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.t th,table.t td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f6f6f6}
img{max-width:100%;margin:.5em 0}
dl{font-size:.85em;color:#444}dt{font-weight:600;float:left;clear:left;width:11em}dd{margin-left:12em}
.note{font-size:.8em;color:#666}code{background:#f3f3f3;padding:0 .2em}
"""


def write_html_report(
    path: str | os.PathLike,
    comparison,
    accuracy: pd.DataFrame | None = None,
    view=None,
    title: str = "featdiff report: what post-training did to the features",
    figures: dict | None = None,
) -> Path:
    """Write one self-contained HTML file (no external assets) with the comparison, the accuracy and the
    crosscoder view: the key table, every table as HTML, every figure as an embedded base64 PNG and a short
    explanation of each number. ``figures`` (optional) maps names to matplotlib figures or PNG bytes
    already drawn (``"comparison"``, ``"accuracy"``, ``"crosscoder_<key>"``); missing ones are drawn here.
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
        "<b>novel</b>. Read the feature numbers beside the accuracy: RL typically keeps and re-uses the base's "
        "features and holds its out-of-domain accuracy, SFT adds new features and forgets.</p>",
        '<p class="note">'
        + html.escape(
            f"reference: {meta.get('reference', 'base')} · hook: {meta.get('hook')} · method: "
            f"{meta.get('method', 'saes')} · tokens: {meta.get('n_tokens', meta.get('n_eval_tokens'))} · "
            f"seed: {meta.get('seed')} · featdiff {__version__}"
        )
        + "</p>",
        "<h2>Key table</h2>",
        _table(key_table(comparison, accuracy)),
        _explain([*ACCURACY_GROUPS, *KEY_FEATURE_COLUMNS] if accuracy is not None else KEY_FEATURE_COLUMNS),
    ]
    if accuracy is not None:
        acc = ordered_accuracy(accuracy)
        parts += [
            "<h2>Accuracy</h2>",
            "<p>Fraction of correct answers per task (greedy decoding) of each checkpoint; the group columns "
            "are means over the tasks of the group.</p>",
            _img(png["accuracy"], "accuracy per task group and task"),
            _table(acc, index=False),
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
        "<p>Left: the status of each checkpoint's live features (bars corrected by the noise floor, dots "
        "raw). Right: how far reused features moved from their base feature.</p>",
        _img(png["comparison"], "feature status and drift"),
        _table(s),
        _explain(s.columns),
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
            "amplify them in base and measure the accuracy.</p>",
        ]
        for name in view.figures:
            parts.append(_img(png[f"crosscoder_{name}"], f"crosscoder view: {name}"))
        for name, table in view.tables.items():
            parts += [
                f"<h3>{html.escape(name.replace('_', ' '))}</h3>",
                _table(table, max_rows=25, index=False, note=f"; all of them in crosscoder/{name}.csv")
                if len(table)
                else '<p class="note">(empty)</p>',
            ]
        notes = view.meta.get("notes") or []
        if notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
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


# ---- figures of the crosscoder view (featdiff.analysis) ------------------------------------------
