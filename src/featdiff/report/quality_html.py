"""The report's SAE-quality section: one compact row per checkpoint's dictionary (the reference's first,
then the targets', then the replicas'), each number with its interval (featdiff.comparison.quality)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

from featdiff.comparison.quality import quality_table
from featdiff.metrics.quality import QUALITY_COLUMNS

# the table's headers and how many digits each number gets
_HEADERS = {
    "l0": ("L0", 1),
    "fve": ("FVE", 3),
    "dead_share": ("dead", 3),
    "dense_share": ("dense", 3),
    "ce_recovered": ("CE recovered", 3),
    "kl_div": ("KL", 4),
}


def _cell(rec: Mapping, q: str, digits: int) -> str:
    v = rec.get(q)
    if v is None or not math.isfinite(float(v)):
        return "—"
    lo, hi = rec.get(f"{q}_lo"), rec.get(f"{q}_hi")
    out = f"{float(v):.{digits}f}"
    if lo is not None and hi is not None and math.isfinite(float(lo)) and math.isfinite(float(hi)):
        out += f" [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"
    return out


def quality_section(meta: Mapping, level: float | None = None) -> str:
    """The SAE-quality table of ``meta["quality"]`` as HTML, with a line on what each number is; empty when
    the comparison measured none.

    Examples
    --------
    >>> meta = {"reference": "base", "quality": {"base": {"l0": 4.0, "fve": 0.9, "fve_lo": 0.88, "fve_hi": 0.91}}}
    >>> "0.900 [0.880, 0.910]" in quality_section(meta)
    True
    """
    t = quality_table(meta)
    if t.empty:
        return ""
    cols = [q for q in QUALITY_COLUMNS if q in t.columns]
    head = "".join(f"<th>{html.escape(_HEADERS[q][0])}</th>" for q in cols)
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th>"
        + "".join(f"<td>{html.escape(_cell(rec, q, _HEADERS[q][1]))}</td>" for q in cols)
        + "</tr>"
        for key, rec in t.to_dict(orient="index").items()
    )
    level = level if level is not None else meta.get("interval_level")
    brackets = f"{level:.0%} intervals over token chunks" if level else "intervals over token chunks"
    dense = (meta.get("config") or {}).get("dense_threshold", 0.1)
    return (
        "<h3>SAE quality per checkpoint</h3><p>Each checkpoint's SAE (and its replicas) on the held-out tokens, "
        "as sae-lens and SAEBench report them: L0 (latents active per token), FVE (fraction of variance "
        f"explained), dead (never fired) and dense (fired on more than {dense:.0%} of the tokens) latent shares, "
        "and with the reconstruction spliced into the model at the hook: CE loss recovered against "
        "zero-ablation and KL to the clean model's next-token distribution. A checkpoint whose SAE is much "
        "worse than the reference's has a warning above: its 'novel' reading then means little. Brackets: "
        f"{html.escape(brackets)} (docs/diagnostics.md, \"SAE quality\").</p>"
        f'<div class="scroll"><table class="t"><thead><tr><th>dictionary</th>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )
