"""The featdiff command answers bad arguments and bad files with one line on stderr and exit status 2.

Each broken input is run as a user runs it, ``python -m featdiff ...`` in a fresh interpreter: the status is
2, stderr is exactly one line starting with ``featdiff <command>: error:`` and there is no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

# about 30 fresh interpreters (2 s each, 6 s where a model loads): run two at a time, ~50 s on 2 cores
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two tiny saved checkpoints, good tokens and every kind of broken file."""
    from transformer_lens import HookedTransformer

    import featdiff as fd

    root = tmp_path_factory.mktemp("cli_errors")
    cfg = dict(n_layers=2, d_model=16, n_ctx=12, d_head=4, n_heads=4, d_mlp=32, d_vocab=20, act_fn="gelu", seed=0)
    model = HookedTransformer(cfg)
    f = {"base": fd.save_model(model, root / "base"), "rl": fd.save_model(model, root / "rl")}
    g = torch.Generator().manual_seed(0)
    torch.save(torch.randint(0, 20, (8, 12), generator=g), root / "tokens.pt")
    f["tokens"] = root / "tokens.pt"
    torch.save(torch.randn(8, 12), root / "floats.pt")
    f["floats"] = root / "floats.pt"
    torch.save(torch.randint(0, 20, (12,), generator=g), root / "flat.pt")
    f["flat"] = root / "flat.pt"
    torch.save(torch.randint(0, 20, (0, 12), generator=g), root / "no_rows.pt")
    f["no_rows"] = root / "no_rows.pt"
    torch.save(torch.randint(100, 200, (8, 12), generator=g), root / "big_ids.pt")
    f["big_ids"] = root / "big_ids.pt"
    torch.save(torch.randint(0, 20, (8, 40), generator=g), root / "too_long.pt")
    f["too_long"] = root / "too_long.pt"
    (root / "text.pt").write_text("these are not token ids\n")
    f["text"] = root / "text.pt"
    (root / "empty.pt").write_bytes(b"")
    f["empty_pt"] = root / "empty.pt"
    (root / "empty.safetensors").write_bytes(b"")
    f["empty_st"] = root / "empty.safetensors"
    (root / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(64))
    f["corrupt_st"] = root / "corrupt.safetensors"
    save_file({"a": torch.zeros(2, 3, dtype=torch.long), "b": torch.zeros(2, 3, dtype=torch.long)},
              str(root / "two.safetensors"))
    f["two_st"] = root / "two.safetensors"
    (root / "tokens.npy").write_bytes(b"\x93NUMPY")
    f["npy"] = root / "tokens.npy"
    (root / "not_a_checkpoint").mkdir()
    (root / "not_a_checkpoint" / "notes.txt").write_text("my notes\n")
    f["not_ckpt"] = root / "not_a_checkpoint"
    # a saved checkpoint whose weights file was cut short
    broken = fd.save_model(model, root / "broken")
    for w in broken.glob("*.safetensors"):
        w.write_bytes(w.read_bytes()[:100])
    f["broken_ckpt"] = broken
    (root / "docs.txt").write_text("some text\nmore text\n")
    (root / "a_file").write_text("x\n")
    f["a_file"] = root / "a_file"
    f["missing"] = root / "missing"
    f["out"] = root / "out"
    return f


def _compare(f, *extra, base="base", rl="rl", tokens="tokens"):
    args = ["compare", str(f[base]), str(f[rl])]
    if tokens is not None:
        args += ["--tokens", str(f[tokens])]
    if "--out" not in extra:
        args += ["--out", str(f["out"])]
    return [*args, "--n-steps", "2", "--d-sae", "32", "--quiet", *extra]  # short, if a case were accepted


# (case id, command, argv from the files): every one must exit 2 with one line naming the command
CASES = [
    ("missing base", "compare", lambda f: _compare(f, base="missing")),
    ("folder that is not a checkpoint", "compare", lambda f: _compare(f, rl="not_ckpt")),
    ("a file as checkpoint", "compare", lambda f: _compare(f, base="a_file")),
    ("corrupted checkpoint weights", "compare", lambda f: _compare(f, rl="broken_ckpt")),
    ("tokens file that is text", "compare", lambda f: _compare(f, tokens="text")),
    ("float tokens", "compare", lambda f: _compare(f, tokens="floats")),
    ("1-d tokens", "compare", lambda f: _compare(f, tokens="flat")),
    ("tokens with no rows", "compare", lambda f: _compare(f, tokens="no_rows")),
    ("token ids outside the vocabulary", "compare", lambda f: _compare(f, tokens="big_ids")),
    ("sequences longer than the context", "compare", lambda f: _compare(f, tokens="too_long")),
    ("empty .pt tokens file", "compare", lambda f: _compare(f, tokens="empty_pt")),
    ("empty .safetensors tokens file", "compare", lambda f: _compare(f, tokens="empty_st")),
    ("corrupted .safetensors tokens file", "compare", lambda f: _compare(f, tokens="corrupt_st")),
    ("safetensors without a 'tokens' tensor", "compare", lambda f: _compare(f, tokens="two_st")),
    ("tokens file of an unknown kind", "compare", lambda f: _compare(f, tokens="npy")),
    ("tokens file missing", "compare", lambda f: _compare(f, tokens="missing")),
    ("negative --k", "compare", lambda f: _compare(f, "--k", "-3")),
    ("zero --d-sae", "compare", lambda f: _compare(f, "--d-sae", "0")),
    ("negative --n-steps", "compare", lambda f: _compare(f, "--n-steps", "-5")),
    ("non-integer --k", "compare", lambda f: _compare(f, "--k", "four")),
    ("unknown --method", "compare", lambda f: _compare(f, "--method", "pca")),
    ("bad --hook name", "compare", lambda f: _compare(f, "--hook", "blocks.9.hook_resid_post")),
    ("--out pointing at a file", "compare", lambda f: _compare(f, "--out", str(f["a_file"]))),
    ("unknown device", "compare", lambda f: _compare(f, "--device", "tpu7")),
    ("missing positional rl", "compare", lambda f: ["compare", str(f["base"]), "--out", str(f["out"])]),
    ("text corpus missing", "compare", lambda f: _compare(f, "--text", str(f["missing"]), tokens=None)),
    ("text and a checkpoint without a tokenizer", "compare",
     lambda f: _compare(f, "--text", str(f["a_file"].with_name("docs.txt")), tokens=None)),
    ("two checkpoints named base", "compare",
     lambda f: ["compare", f"base={f['base']}", f"base={f['rl']}", "--out", str(f["out"])]),
    ("a fourth checkpoint without a name", "compare",
     lambda f: ["compare", *(str(f[n]) for n in ("base", "rl", "rl", "rl")), "--out", str(f["out"])]),
    ("unknown option", "compare", lambda f: _compare(f, "--frobnicate")),
    ("demo --out pointing at a file", "demo", lambda f: ["demo", "--small", "--out", str(f["a_file"])]),
    ("demo --cache-dir pointing at a file", "demo",
     lambda f: ["demo", "--small", "--out", str(f["out"]), "--cache-dir", str(f["a_file"])]),
]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, "-m", "featdiff", *argv], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def results(files):
    """Every case run once, two interpreters at a time (each mostly waits on imports)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda case: _run(case[2](files)), CASES))
    return {case[0]: proc for case, proc in zip(CASES, procs, strict=True)}


@pytest.mark.parametrize("name,command", [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(results, files, name, command):
    proc = results[name]
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr, f"{name}: {proc.stderr[-2000:]}"
    assert proc.returncode == 2, (name, proc.returncode, err)
    assert len(err.splitlines()) == 1, (name, err)
    assert err.startswith(f"featdiff {command}: error: "), (name, err)
    assert len(err) > len(f"featdiff {command}: error: ") + 10  # says what was wrong
    assert files["a_file"].read_text() == "x\n"  # a file given as --out is never replaced


def test_no_command_is_one_line_and_exit_2(files):
    proc = _run([])
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("featdiff: error: ")
    assert "Traceback" not in proc.stderr
