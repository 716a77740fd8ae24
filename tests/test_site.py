"""The docs site builds with `mkdocs build --strict`, offline, with API pages and the examples executed as notebooks.

The build itself (`test_site_*`, one build shared by the module) is marked slow: about 25 s of CPU, most of it
executing examples/*.py in a kernel. It runs in `make test` and CI, so a broken page, link or reference fails.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _need(*modules: str) -> None:
    """Skip where the docs extra is not installed, except in CI (`make test` installs it there): fail."""
    for module in modules:
        if os.environ.get("CI"):
            importlib.import_module(module)
        else:
            pytest.importorskip(module, reason="the docs extra: pip install -e '.[docs]'")


def _hooks():
    spec = importlib.util.spec_from_file_location("featdiff_mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mkdocs(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


# ---- fast: the pieces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_percent_notebooks(script):
    """Each example reads as a notebook of titled `# %%` cells (what Jupyter with jupytext opens)."""
    _need("jupytext")
    import jupytext

    nb = jupytext.read(script)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    titled = [cell for cell in code if cell.metadata.get("title")]
    assert len(code) >= 4
    assert len(titled) == len(code) - 1  # all but the module docstring
    markers = [line for line in script.read_text().splitlines() if line.startswith("# %%")]
    assert len(markers) == len(titled)


def test_notebook_markdown_renders_outputs():
    """Titles become headings, the docstring prose; stdout, stderr (a warning box), PNG and HTML outputs show."""
    _need("nbformat")
    import base64

    from nbformat.v4 import new_code_cell, new_notebook, new_output

    png = b"\x89PNG\r\n\x1a\n" + bytes(8)
    outputs = [
        new_output("stream", name="stdout", text="one\n"),
        new_output("stream", name="stdout", text="two\n"),
        new_output("stream", name="stderr", text="UserWarning: careful\n"),
        new_output(
            "display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}
        ),
        new_output("execute_result", data={"text/html": "<table><tr><td>7</td></tr></table>"}),
    ]
    nb = new_notebook(
        cells=[
            new_code_cell('"""What this example shows."""'),
            new_code_cell("print(1)", metadata={"title": "First step"}, outputs=outputs),
        ]
    )
    page, images = _hooks().notebook_markdown(nb, "demo", "Demo", small=True)
    assert page.startswith("# Demo\n")
    assert "Small mode" in page
    assert "What this example shows." in page and '"""' not in page
    assert "## First step" in page
    assert "```python\nprint(1)\n```" in page
    assert "```text\none\ntwo\n```" in page  # consecutive stdout chunks: one block
    assert '!!! warning "Warnings (stderr)"\n\n    ```text\n    UserWarning: careful\n    ```' in page
    assert images == {"demo/cell1_3.png": png}
    assert "![output of cell 1](demo/cell1_3.png)" in page
    assert '<div class="nb-output" markdown="0">\n<table><tr><td>7</td></tr></table>\n</div>' in page
    assert page.index("one") < page.index("careful") < page.index("cell1_3.png") < page.index("<table>")


def test_a_failing_cell_fails(tmp_path):
    """A cell that raises stops the notebook with an error naming it (so it fails the docs build)."""
    _need("jupytext", "nbclient", "ipykernel")
    from nbclient.exceptions import CellExecutionError

    script = tmp_path / "broken.py"
    script.write_text('# %% Fine\nx = 1\n\n# %% Broken\nraise RuntimeError(f"broken cell {x}")\n')
    with pytest.raises(CellExecutionError, match="broken cell 1"):
        _hooks().execute_example(script, tmp_path)


def test_nav_lists_every_page_examples_and_api(tmp_path):
    """A page missing from mkdocs.yml's nav joins "Guides"; every example and public namespace gets a page."""
    _need("yaml")
    import shutil

    import yaml

    for page in (ROOT / "docs").glob("*.md"):
        shutil.copy(page, tmp_path / page.name)
    (tmp_path / "zz_new_page.md").write_text("# A page written after mkdocs.yml\n")
    hooks = _hooks()
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(tmp_path)
    listed = set(hooks._walk(config["nav"]))
    guides_before = list(next(e["Guides"] for e in config["nav"] if isinstance(e, dict) and "Guides" in e))
    config = hooks.on_config(config)
    pages = {p.name for p in tmp_path.glob("*.md")}
    guides = next(e["Guides"] for e in config["nav"] if isinstance(e, dict) and "Guides" in e)
    assert "zz_new_page.md" in pages - listed
    assert guides == guides_before + sorted(pages - listed)
    flat = set(hooks._walk(config["nav"]))
    assert pages <= flat
    assert {f"examples/{p.stem}.md" for p in EXAMPLES} <= flat
    assert {"api/featdiff.md", "api/featdiff.lab.md", "api/featdiff.synthetic.md"} <= flat


def test_strict_config_rejects_broken_links_and_anchors(tmp_path):
    """The site's own settings (strict, link and anchor validation) fail a build on a broken link or anchor."""
    _need("mkdocs", "material", "yaml")
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    del config["hooks"]
    config["plugins"] = ["search"]
    config["nav"] = ["index.md"]
    config["docs_dir"] = str(tmp_path / "docs")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[ok](#home) [missing](missing.md)\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = _mkdocs("-f", str(tmp_path / "mkdocs.yml"), "-d", str(tmp_path / "site"), cwd=tmp_path)
    assert result.returncode != 0 and "missing.md" in result.stderr, result.stderr[-2000:]
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[ok](#home) [bad anchor](#nowhere)\n")
    result = _mkdocs("-f", str(tmp_path / "mkdocs.yml"), "-d", str(tmp_path / "site"), cwd=tmp_path)
    assert result.returncode != 0 and "nowhere" in result.stderr, result.stderr[-2000:]
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[ok](#home)\n")
    result = _mkdocs("-f", str(tmp_path / "mkdocs.yml"), "-d", str(tmp_path / "site"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


# ---- slow: the whole site, built once ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _need("mkdocs", "material", "mkdocstrings_handlers.python", "jupytext", "nbclient", "ipykernel")
    tmp = tmp_path_factory.mktemp("site")
    out = tmp / "out"
    env = {
        "FEATDIFF_CACHE": str(tmp / "cache"),
        "FEATDIFF_EXAMPLE_SMALL": "1",
        "FEATDIFF_EXAMPLE_OUT": str(out),
    }
    result = _mkdocs("--strict", "-d", str(tmp / "site"), env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return tmp / "site", out


def _text(path: Path) -> str:
    return re.sub(r"<[^>]+>", " ", path.read_text())


@pytest.mark.slow
@pytest.mark.docs
def test_site_has_every_page(site):
    site_dir, _ = site
    assert (site_dir / "index.html").is_file()
    for page in (ROOT / "docs").glob("*.md"):
        assert (site_dir / f"{page.stem}.html").is_file(), page.name
    home = (site_dir / "index.html").read_text()
    assert 'href="examples/lab_walkthrough.html"' in home and 'href="api/featdiff.html"' in home


@pytest.mark.slow
@pytest.mark.docs
def test_site_links_work_from_the_file_system(site):
    """site/index.html opened as a file (no web server): every relative link of every page names a file that
    exists (a page, an image, a notebook), never a folder, which a browser would show as a listing."""
    site_dir, _ = site
    link = re.compile(r'\b(?:href|src)="([^"#?]+)[^"]*"')
    checked = 0
    for page in site_dir.rglob("*.html"):
        if page.name == "404.html":  # served by a web server at any depth; its links are absolute
            continue
        for target in link.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("/"):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_file(), (page.relative_to(site_dir), target)
            checked += 1
    assert checked > 500


@pytest.mark.slow
@pytest.mark.docs
def test_site_api_reference_covers_the_public_namespaces(site):
    """Every public name of featdiff, featdiff.lab and featdiff.synthetic has its entry, from its docstring."""
    import types

    site_dir, _ = site
    for ns in ["featdiff", "featdiff.lab", "featdiff.synthetic"]:
        module = importlib.import_module(ns)
        html = (site_dir / "api" / f"{ns}.html").read_text()
        ids = set(re.findall(r'id="([\w.]+)"', html))
        # a `>>>` example outside an Examples section renders as a quote
        assert "<blockquote>" not in html, ns
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType) or name.startswith("__"):
                continue
            assert f"{ns}.{name}" in ids or f"{obj.__module__}.{obj.__qualname__}" in ids, (ns, name)
    api = _text(site_dir / "api" / "featdiff.html")
    assert "Everything in one call" in api  # compare_checkpoints's docstring
    # the page opens on the pipeline (the first group of featdiff.__all__), not on the alphabet's ActivationSet
    assert api.index("Everything in one call") < api.index("Activations of several checkpoints at one hook")
    assert "Match target features to reference features" in api  # align (shadowed by its module's name)


@pytest.mark.slow
@pytest.mark.docs
def test_site_examples_are_executed_with_their_outputs(site):
    site_dir, out = site
    walk = site_dir / "examples" / "lab_walkthrough"  # the page's figures; the page is lab_walkthrough.html
    text = _text(site_dir / "examples" / "lab_walkthrough.html")
    assert "in_domain" in text and "out_of_domain" in text and "noise_floor_reuse" in text  # printed tables
    assert re.search(r"\bsft\s+0\.\d+", text)  # a row of numbers, not only the code
    pngs = sorted(walk.glob("*.png"))
    assert len(pngs) >= 2 and all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    html = (site_dir / "examples" / "lab_walkthrough.html").read_text()
    assert all(f'src="lab_walkthrough/{p.name}"' in html for p in pngs)
    assert (out / "report.html").is_file()  # the example wrote where it was told, not into the repository
    import nbformat

    nb = nbformat.read(walk.parent / "lab_walkthrough.ipynb", as_version=4)  # the download, with its outputs
    nbformat.validate(nb)
    assert sum(len(cell.get("outputs", [])) for cell in nb.cells) >= 5
    assert 'href="lab_walkthrough.ipynb"' in html
    # no path of the machine that built the site; warnings as "Category: message", alike ones grouped (the
    # small mode's tiny lab and short runs warn: few tokens, dead latents, training that had not settled)
    assert str(ROOT) not in html and "site-packages" not in html and not re.search(r"\.py:\d+:", html)
    assert html.count("FeatdiffWarning: ") <= 8, html.count("FeatdiffWarning: ")
    custom = _text(site_dir / "examples" / "custom_metric.html")
    assert "sharpness" in custom and re.search(r"code_correlation|0\.\d{3}", custom)


@pytest.mark.slow
@pytest.mark.docs
def test_site_is_offline(site):
    """No page or stylesheet loads fonts or scripts from another host; nothing triggers material's lazy loads."""
    site_dir, _ = site
    remote = r"""(?:https?:)?//"""
    tag = re.compile(
        rf"""<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)\s*=\s*["']?{remote}""", re.I
    )
    css = re.compile(rf"""url\(\s*["']?{remote}|@import\s+(?:url\()?\s*["']?{remote}""", re.I)
    pages = list(site_dir.rglob("*.html"))
    assert len(pages) >= 10
    for page in pages:
        html = page.read_text()
        assert not tag.search(html), (page, tag.search(html).group(0))
        # material's bundle fetches mermaid from a CDN only for a page with a mermaid diagram
        assert 'class="mermaid"' not in html, page
    for sheet in site_dir.rglob("*.css"):
        assert not css.search(sheet.read_text()), sheet
