"""mkdocs hooks (mkdocs.yml `hooks:`): the executed example notebooks, the API pages and a tolerant nav.

- Each ``examples/*.py`` (a jupytext percent-format notebook) is executed in a fresh kernel (``nbclient``) and
  rendered as a Markdown page ``examples/<name>.md`` with its outputs (text, HTML tables, PNG figures as
  files), beside the executed notebook ``examples/<name>.ipynb`` to download. A cell that raises fails the
  build. The examples run in their small mode (``FEATDIFF_EXAMPLE_SMALL=1``) unless the environment sets
  that variable; their files go to a temporary folder (``FEATDIFF_EXAMPLE_OUT``), never into the repository.
- One API page ``api/<namespace>.md`` (mkdocstrings) per public namespace: ``featdiff`` and each subpackage
  named in ``featdiff.__all__``; ``featdiff``'s follows the groups of its ``__all__`` (the pipeline first).
- Every ``docs/*.md`` page missing from ``nav`` joins its "Guides" section, so a new page is built and
  linked without editing mkdocs.yml; "Examples" and "API" sections are appended.

``execute_example`` and ``notebook_markdown`` are used by the tests too (tests/test_site.py).
"""

from __future__ import annotations

import ast
import base64
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PRELUDE = "featdiff_docs_prelude"
# Run before the first cell, not rendered: show each pyplot figure a cell left open as a PNG output (featdiff's
# figures use the Agg backend, which a notebook does not display by itself), as Jupyter's inline backend would.
PRELUDE = """
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets: text bars
# a warning shows as "Category: message", without the path of the machine that built the site
warnings.formatwarning = lambda message, category, *args, **kwargs: f"{category.__name__}: {message}\\n"

def _featdiff_show_figures():
    import sys
    if "matplotlib.pyplot" not in sys.modules:
        return
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import select_figure_formats
    from IPython.display import display
    select_figure_formats(get_ipython(), {"png"})
    for number in plt.get_fignums():
        display(plt.figure(number))
        plt.close(number)

get_ipython().events.register("post_execute", _featdiff_show_figures)
"""


def namespaces() -> list[str]:
    """``featdiff`` and its public subpackages (module objects in ``featdiff.__all__``), in that order."""
    import importlib
    import types

    sys.path.insert(0, str(ROOT / "src"))  # the checkout's featdiff, installed or not
    try:
        fd = importlib.import_module("featdiff")
    finally:
        sys.path.pop(0)
    subs = sorted(
        f"featdiff.{name}" for name in fd.__all__ if isinstance(getattr(fd, name, None), types.ModuleType)
    )
    return ["featdiff", *subs]


def api_groups(namespace: str) -> list[tuple[str, list[str]]]:
    """The groups of a namespace's ``__all__``: (the comment above a group, its names), in order.

    A namespace whose ``__all__`` has no comments is one untitled group. Read from the source, since the
    comments are not in the module object.
    """
    import importlib

    module = importlib.import_module(namespace)
    source = Path(module.__file__).read_text()
    start = source.find("__all__ = [")
    if start < 0:
        return [("", list(getattr(module, "__all__", [])))]
    groups: list[tuple[str, list[str]]] = []
    for line in source[start:].splitlines()[1:]:
        line = line.strip()
        if line.startswith("]"):
            break
        if line.startswith("#"):
            groups.append((line.lstrip("# ").strip(), []))
        elif line.startswith(("'", '"')):
            if not groups:
                groups.append(("", []))
            groups[-1][1].append(line.strip("\"',"))
    return groups


def api_page(namespace: str) -> str:
    """The mkdocstrings page of one namespace: its public members, from their docstrings.

    A namespace whose ``__all__`` is grouped by comments (``featdiff``'s) is rendered group by group in that
    order, each name from its defining module, so the page opens on the pipeline (``compare_checkpoints``);
    a public subpackage is a link to its own page. Otherwise the namespace's members are listed by
    mkdocstrings; there a re-exported function that has the name of a submodule (a function ``x``
    re-exported beside a module ``x.py`` of the same package shadows it) is hidden by the static analysis,
    so such names are rendered explicitly from their defining module.
    """
    import importlib
    import types

    module = importlib.import_module(namespace)
    groups = api_groups(namespace)
    if any(title for title, _ in groups):
        head = f"::: {namespace}\n    options:\n      show_root_heading: false\n      members: false\n"
        blocks = [f"# `{namespace}`", head]
        for title, names in groups:
            heading, _, what = title.partition(": ")
            blocks.append(f"## {heading[0].upper()}{heading[1:]}")
            if what:
                blocks.append(f"{what[0].upper()}{what[1:]}.")
            for name in names:
                obj = getattr(module, name, None)
                if isinstance(obj, types.ModuleType):
                    summary = (obj.__doc__ or "").strip().splitlines()[0]
                    blocks.append(f"- [`{obj.__name__}`]({obj.__name__}.md): {summary}")
                elif hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
                    options = "    options:\n      show_root_full_path: false\n      heading_level: 3\n"
                    blocks.append(f"::: {obj.__module__}.{obj.__qualname__}\n{options}")
                elif not name.startswith("__"):
                    blocks.append(f"::: {namespace}.{name}\n    options:\n      heading_level: 3\n")
        return "\n\n".join(blocks) + "\n"
    options = "    options:\n      show_root_heading: false\n"
    blocks = [f"# `{namespace}`", f"::: {namespace}\n{options}"]
    root = Path(module.__file__).parent
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name, None)
        shadowed = (root / f"{name}.py").is_file() or (root / name / "__init__.py").is_file()
        if shadowed and not isinstance(obj, types.ModuleType) and hasattr(obj, "__qualname__"):
            blocks.append(
                f"::: {obj.__module__}.{obj.__qualname__}\n    options:\n      show_root_full_path: false\n"
            )
    return "\n\n".join(blocks) + "\n"


def execute_example(path: Path, workdir: Path, timeout: int = 600):
    """Run the percent-format script ``path`` as a notebook in a fresh kernel in ``workdir``; return it executed.

    Raises ``nbclient.exceptions.CellExecutionError`` (naming the cell) when a cell raises.
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PRELUDE, metadata={_PRELUDE: True}))
    env = dict(os.environ)
    env.setdefault("FEATDIFF_EXAMPLE_SMALL", "1")
    env.setdefault("FEATDIFF_EXAMPLE_OUT", str(workdir / "out"))
    env.pop("MPLBACKEND", None)  # the kernel's inline backend shows the figures
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute(env=env)
    nb.cells = [cell for cell in nb.cells if not cell.metadata.get(_PRELUDE)]
    return nb


def _docstring(source: str) -> str | None:
    """The text of a cell that is only a string literal (a module docstring), else None."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return None
    if len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        value = body[0].value.value
        return value if isinstance(value, str) else None
    return None


def _fence(text: str, lang: str = "text") -> str:
    text = _ANSI.sub("", text).rstrip("\n")
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{ticks}{lang}\n{text}\n{ticks}"


def notebook_markdown(nb, name: str, title: str, small: bool = False) -> tuple[str, dict[str, bytes]]:
    """A Markdown page for the executed notebook ``nb`` and its images ``{relative file name: bytes}``.

    Cell titles (``# %% Title``) become headings, a docstring-only cell becomes prose, code becomes a
    Python block followed by its outputs.
    """
    parts = [
        f"# {title}",
        f"*Source: `examples/{name}.py`, executed when the site was built; download the executed notebook: "
        f"[{name}.ipynb]({name}.ipynb).*",
    ]
    if small:
        parts.append(SMALL_NOTE)
    images: dict[str, bytes] = {}
    for i, cell in enumerate(nb.cells):
        heading = cell.metadata.get("title")
        if heading:
            parts.append(f"## {heading}")
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        doc = _docstring(cell.source)
        if doc is not None:  # the module docstring: prose (its echo as the cell's value is not shown)
            parts.append(doc.strip())
            continue
        parts.append(_fence(cell.source, "python"))
        stream: list = []
        for j, out in enumerate(cell.get("outputs", [])):
            if out.output_type == "stream" and (not stream or stream[0].name == out.name):
                stream.append(out)
                continue
            parts.extend(_streams(stream))
            stream = [out] if out.output_type == "stream" else []
            if stream:
                continue
            data = out.get("data", {})
            if out.output_type == "error":
                parts.append(_fence("\n".join(out.traceback)))
            elif "image/png" in data:
                file = f"{name}/cell{i}_{j}.png"
                images[file] = base64.b64decode(data["image/png"])
                parts.append(f"![output of cell {i}]({file})")
            elif "text/html" in data:
                parts.append(f'<div class="nb-output" markdown="0">\n{data["text/html"].strip()}\n</div>')
            elif "text/plain" in data:
                parts.append(_fence(data["text/plain"]))
        parts.extend(_streams(stream))
    return "\n\n".join(parts) + "\n", images


SMALL_NOTE = (
    '!!! note "Small mode"\n\n    Executed in its small mode (`FEATDIFF_EXAMPLE_SMALL=1`, the docs build\'s default): '
    "a tiny lab and few training steps, so the numbers show what the outputs look like, not the lab's findings "
    "(the README gives those), and its warnings say that the tiny runs are too small to read. "
    "`FEATDIFF_EXAMPLE_SMALL=0 make docs` renders the full lab."
)


def _streams(outputs) -> list[str]:
    """Consecutive outputs of one stream as one block; stderr (warnings) in a warning box."""
    if not outputs:
        return []
    block = _fence("".join(out.text for out in outputs))
    if outputs[0].name == "stderr":
        return [
            '!!! warning "Warnings (stderr)"\n\n' + "\n".join("    " + line for line in block.splitlines())
        ]
    return [block]


def _title(path: Path) -> str:
    return path.stem.replace("_", " ").capitalize()


# ---- mkdocs events ----------------------------------------------------------------------------------------


def on_config(config):
    nav = config["nav"] or []
    listed = {_page_of(entry) for entry in _walk(nav)}
    docs = Path(config["docs_dir"])
    orphans = sorted(p.name for p in docs.glob("*.md") if p.name not in listed)
    guides = next((e for e in nav if isinstance(e, dict) and "Guides" in e), None)
    if guides is None:
        guides = {"Guides": []}
        nav.append(guides)
    guides["Guides"].extend(orphans)
    examples = sorted(EXAMPLES.glob("*.py"))
    nav.append({"Examples": [{_title(p): f"examples/{p.stem}.md"} for p in examples]})
    nav.append({"API": [{f"{ns}": f"api/{ns}.md"} for ns in namespaces()]})
    config["nav"] = nav
    return config


def _walk(nav):
    for entry in nav:
        if isinstance(entry, dict):
            for value in entry.values():
                yield from _walk(value) if isinstance(value, list) else [value]
        elif isinstance(entry, list):
            yield from _walk(entry)
        else:
            yield entry


def _page_of(entry) -> str:
    return entry if isinstance(entry, str) else ""


def on_files(files, config):
    import nbformat
    from mkdocs.structure.files import File

    for ns in namespaces():
        files.append(File.generated(config, f"api/{ns}.md", content=api_page(ns)))
    with tempfile.TemporaryDirectory(prefix="featdiff-docs-") as tmp:
        for path in sorted(EXAMPLES.glob("*.py")):
            workdir = Path(tmp) / path.stem
            workdir.mkdir()
            nb = execute_example(path, workdir)
            small = os.environ.get("FEATDIFF_EXAMPLE_SMALL", "1") == "1"
            page, images = notebook_markdown(nb, path.stem, _title(path), small=small)
            files.append(File.generated(config, f"examples/{path.stem}.md", content=page))
            files.append(File.generated(config, f"examples/{path.stem}.ipynb", content=nbformat.writes(nb)))
            for name, data in images.items():
                files.append(File.generated(config, f"examples/{name}", content=data))
    return files
