"""The report as a reader sees it: rendered in headless Chromium at 1280 px, nothing overflows the page, and
no figure's legend covers its data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import torch

import featdiff as fd
from featdiff.dictionaries.sae import sae_from_dictionary
from featdiff.report.figures import headless_pyplot, plot_accuracy, plot_comparison
from featdiff.report.html import write_html_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

ACC = pd.DataFrame(
    {"checkpoint": ["base", "rl", "sft"], "in_domain": [0.3, 0.9, 0.95], "out_of_domain": [0.99, 0.97, 0.27]}
)

# Runs in the page after layout: the page's width, and every table's and image's right edge against the
# page and against its scrolling container, written into the DOM that --dump-dom prints.
PROBE = """
<script>
window.addEventListener("load", () => {
  const W = window.innerWidth, out = {inner: W, scroll: document.documentElement.scrollWidth, bad: [], n: 0};
  for (const el of document.querySelectorAll("table, img, pre")) {
    out.n += 1;
    const box = el.closest(".scroll") || el;
    const r = box.getBoundingClientRect();
    if (r.right > W + 0.5 || r.left < -0.5) out.bad.push([el.tagName, "outside the page", r.left, r.right]);
    if (box !== el && getComputedStyle(box).overflowX !== "auto" && el.scrollWidth > box.clientWidth)
      out.bad.push([el.tagName, "wider than a container that does not scroll"]);
  }
  const pre = document.createElement("pre"); pre.id = "featdiff-probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _comparison():
    """A real comparison with every summary column (replicas give floors and intervals): the wide table."""
    g = torch.Generator().manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(48, 12, generator=g), dim=1)
    moved = torch.nn.functional.normalize(W + 0.6 * torch.randn(48, 12, generator=g), dim=1)
    saes = {"base": sae_from_dictionary(W, k=3), "rl": sae_from_dictionary(W, k=3),
            "sft": sae_from_dictionary(moved, k=3)}  # fmt: skip
    x = torch.relu(torch.randn(400, 48, generator=g) - 1.0) @ W
    acts = fd.ActivationSet.from_tensors({"base": x, "rl": x, "sft": x + 0.05 * torch.randn(400, 12, generator=g)})
    replica = sae_from_dictionary(torch.nn.functional.normalize(W + 0.1 * torch.randn(48, 12, generator=g), dim=1), k=3)
    return fd.compare_dictionaries(saes, acts, replicas=[replica], progress=False)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt-get)")
def test_report_fits_a_1280px_page_in_chromium(tmp_path):
    page = write_html_report(tmp_path / "report.html", _comparison(), ACC)
    html = page.read_text()
    assert len(re.findall("<table", html)) >= 2
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--window-size=1280,900", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'<pre id="featdiff-probe">(.*?)</pre>', res.stdout, re.S)
    assert found, (res.returncode, res.stderr[-2000:])
    out = json.loads(found.group(1).replace("&quot;", '"'))
    assert out["inner"] == 1280
    assert out["n"] >= 4  # the tables and figures were seen
    assert out["scroll"] <= out["inner"], out  # no horizontal scroll bar on the page
    assert out["bad"] == [], out["bad"]


# After layout: every element's right edge against the page (outside <details>, which a reader opens), the
# scrolling containers that do scroll, the p_value column's cells (their text whole: not clipped, not
# covered), the glossary terms against their definitions, and the tables' first rows.
PROBE_LAYOUT = """
<script>
window.addEventListener("load", () => {
  const W = window.innerWidth, out = {wide: [], scrolling: [], pvalue: [], clipped: [], overlap: [], heads: []};
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("details") || el.id === "featdiff-layout") continue;
    const r = el.getBoundingClientRect();
    if (r.width && r.right > W + 0.5) out.wide.push(el.tagName + "." + el.className);
    if (el.classList.contains("scroll") && el.scrollWidth > el.clientWidth + 1) out.scrolling.push(el.textContent.slice(0, 60));
  }
  for (const table of document.querySelectorAll("table")) {
    if (table.closest("details")) continue;
    const heads = [...table.querySelectorAll("thead th")].map(th => th.textContent.trim());
    out.heads.push(heads.join("|"));
    const col = heads.indexOf("p_value");
    if (col < 0) continue;
    const box = table.closest(".scroll").getBoundingClientRect();
    for (const tr of table.querySelectorAll("tbody tr")) {
      const td = tr.children[col]; const r = td.getBoundingClientRect();
      out.pvalue.push(td.textContent.trim());
      if (r.right > box.right + 0.5 || td.scrollWidth > td.clientWidth + 1) out.clipped.push(td.textContent);
    }
  }
  for (const dt of document.querySelectorAll("dt")) {
    const a = dt.getBoundingClientRect(), b = dt.nextElementSibling.getBoundingClientRect();
    if (a.right > b.left + 0.5 && a.bottom > b.top + 0.5 && b.bottom > a.top + 0.5) out.overlap.push(dt.textContent);
  }
  const pre = document.createElement("pre"); pre.id = "featdiff-layout"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _view():
    """A crosscoder view's tables in the shapes the lab writes: 64 features (most dead), interventions."""
    import types

    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.dirichlet([1, 1, 1], size=64)
    mas = pd.DataFrame({"feature": range(64), "base": w[:, 0], "rl": w[:, 1], "sft": w[:, 2], "dominant": "base",
                        "category": "shared", "dead": np.arange(64) % 4 != 0})  # fmt: skip
    nrn = pd.DataFrame([{"checkpoint": c, "feature": f, "nrn": rng.uniform(), "dead": f % 4 != 0}
                        for c in ("rl", "sft") for f in range(64)])  # fmt: skip
    rows = []
    for edit, model in (("ablate_in_rl", "rl"), ("amplify_in_base", "base")):
        for task, group in (("smallest3", "near_domain"), ("sort", "in_domain")):
            for subset in ("critical", "full"):
                for cond in ("none", "edit", "random"):
                    p = 0.047619 if cond == "edit" else np.nan
                    rows.append({"edit": edit, "model": model, "mode": "ablate", "alpha": 0.0, "n_features": 1,
                                 "condition": cond, "subset": subset, "task": task, "group": group,
                                 "n_selection": 19, "accuracy": rng.uniform(), "n": 18, "n_controls": 20,
                                 "p_min": p, "p_value": p, "p_holm": 4 * p if cond == "edit" else np.nan,
                                 "n_tests": 4, "few_samples": False})  # fmt: skip
    tables = {"mas": mas, "nrn": nrn, "interventions": pd.DataFrame(rows)}
    return types.SimpleNamespace(tables=tables, figures={}, meta={"notes": ["generalization: rl does not beat the "
                                 "base on sort_desc; they do not vote."]})  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt-get)")
def test_report_reads_at_1280px_in_chromium(tmp_path):
    """At 1280 px nothing outside a <details> is wider than the page or scrolls sideways (the summary shows its
    key columns, all of them behind a <details>); the interventions' p_value is there whole; no glossary term
    runs into its definition; the crosscoder section lists live features; the accuracy table is shown once."""
    page = write_html_report(tmp_path / "report.html", _comparison(), ACC, view=_view())
    html = page.read_text()
    assert html.count("<details>") >= 1 and "summary.csv" in html
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE_LAYOUT + "</body>"))
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--window-size=1280,900", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'<pre id="featdiff-layout">(.*?)</pre>', res.stdout, re.S)
    assert found, (res.returncode, res.stderr[-2000:])
    out = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert out["wide"] == [] and out["scrolling"] == [], out
    assert out["pvalue"].count("0.048") == 8 and out["clipped"] == [], out
    assert out["overlap"] == [], out["overlap"]
    heads = out["heads"]
    assert sum(h.startswith("checkpoint|in_domain") for h in heads) == 1, heads  # the accuracy table once
    live = next(h for h in heads if h.startswith("feature|base|rl|sft"))
    assert "nrn_rl" in live and "dead" not in live, live
    assert "16 of 64" in html  # live features of all, not a dump of dead ones
    assert "['" not in html and "[\'" not in html  # no Python list in prose


def _data_boxes(ax, renderer):
    """Display-space boxes of the bars, and points of the outlines (step histograms) and lines, an axes draws."""
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import Bbox

    boxes, points = [], []
    for p in ax.patches:
        if not p.get_visible():
            continue
        if isinstance(p, Rectangle):
            boxes.append(p.get_window_extent(renderer))
        else:  # an outline: its vertices, densified so that a long edge is not skipped
            verts = p.get_transform().transform(p.get_path().interpolated(20).vertices)
            points.extend(verts)
    for line in ax.lines:
        points.extend(line.get_transform().transform(line.get_path().interpolated(20).vertices))
    for coll in ax.collections:  # scatter points
        offsets = coll.get_offsets()
        if len(offsets):
            points.extend(coll.get_offset_transform().transform(offsets))
    return boxes + [Bbox([[x, y], [x, y]]) for x, y in points]


def _crosscoder_figure(which: str):
    """The crosscoder view's figures on small tables of the shapes the lab writes."""
    import numpy as np
    import pandas as pd

    from featdiff.analyses.evolution import plot_feature_evolution
    from featdiff.report.figures import plot_interventions, plot_mas

    rng = np.random.default_rng(0)
    if which == "mas":
        w = rng.dirichlet([1, 1, 1], size=120)
        cat = np.array(["base", "shared", "rl", "sft"])[rng.integers(0, 4, 120)]
        m = pd.DataFrame({"feature": range(120), "base": w[:, 0], "rl": w[:, 1], "sft": w[:, 2],
                          "dominant": "base", "category": cat, "dead": False})  # fmt: skip
        views = ["base+rl+sft", "rl vs base", "sft vs base"]
        c = pd.DataFrame([{"view": v, "category": k, "n_features": 30, "fraction": f}
                          for v in views for k, f in zip(["base", "shared", "rl", "sft"], [0.1, 0.7, 0.1, 0.1], strict=True)])  # fmt: skip
        return plot_mas(m, c)
    if which == "interventions":
        rows = [{"edit": e, "condition": cond, "subset": sub, "task": t, "accuracy": float(rng.uniform(0.2, 1))}
                for e in ("ablate_in_rl", "amplify_in_base") for cond in ("none", "edit", "random")
                for sub in ("critical", "rest") for t in ("smallest3", "sort")]  # fmt: skip
        return plot_interventions(pd.DataFrame(rows))
    steps = [1, 2, 3, 4]
    t = pd.DataFrame({"run": ["rl"] * 4 + ["sft"] * 4, "step": steps * 2,
                      "overlap_prev": [np.nan, 0.6, 0.9, 1.0, np.nan, 0.2, 0.5, 0.95],
                      "overlap_final": [0.3, 0.6, 0.9, 1.0, 0.1, 0.4, 0.8, 1.0]})  # fmt: skip
    return plot_feature_evolution(t)


def _overlaps(a, b) -> bool:
    return a.x0 <= b.x1 and b.x0 <= a.x1 and a.y0 <= b.y1 and b.y0 <= a.y1


@pytest.mark.parametrize("which", ["comparison", "accuracy", "mas", "interventions", "evolution"])
def test_no_legend_covers_data(which):
    plt = headless_pyplot()
    if which in ("comparison", "accuracy"):
        fig = plot_comparison(_comparison()) if which == "comparison" else plot_accuracy(ACC)
    else:
        fig = _crosscoder_figure(which)
    if not hasattr(fig.canvas, "get_renderer"):  # a bare Figure (the crosscoder view's): draw it with Agg
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    n_legends = 0
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        n_legends += 1
        box = legend.get_window_extent(renderer)
        covered = [b for b in _data_boxes(ax, renderer) if _overlaps(box, b)]
        assert covered == [], f"{which}: the legend of {ax.get_title()!r} covers {len(covered)} data marks"
    plt.close(fig)
    assert n_legends >= 1
