"""The featdiff command: `featdiff demo --small` end to end, --help, the cached second run, `featdiff compare`
on saved checkpoints, and bad input exiting 2 with one line."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch

from featdiff.cli import main

ACC_COLUMNS = ["checkpoint", "sort", "sort_desc", "copy", "max", "in_domain", "near_domain", "out_of_domain"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out, cache = root / "report", root / "cache"
    t = time.perf_counter()
    rc = main(["demo", "--small", "--out", str(out), "--cache-dir", str(cache)])
    return rc, out, cache, time.perf_counter() - t


def test_demo_writes_the_report_folder(demo_run):
    rc, out, _, _ = demo_run
    assert rc == 0
    for name in ("summary.csv", "features.parquet", "meta.json", "accuracy.csv", "report.html"):
        assert (out / name).is_file(), name
    assert {"comparison.png", "accuracy.png"} <= {p.name for p in (out / "figures").glob("*.png")}
    acc = pd.read_csv(out / "accuracy.csv")
    assert list(acc["checkpoint"]) == ["base", "sft", "rl"]
    assert list(acc.columns) == ACC_COLUMNS
    values = acc.drop(columns="checkpoint").to_numpy(dtype=float)
    assert ((values >= 0) & (values <= 1)).all()
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert sorted(summary.index) == ["rl", "sft"]
    assert {"reuse", "recombination", "novelty", "drift", "transfer_fve"} <= set(summary.columns)
    assert not list(out.parent.glob(".report.*"))  # no temporary folder left behind


def test_demo_report_html_is_self_contained(demo_run):
    _, out, _, _ = demo_run
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert "<table" in page and "Key table" in page and "transfer_fve" in page and "out_of_domain" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Crosscoder view" in page and "mas categories" in page
    assert (out / "crosscoder" / "mas.csv").is_file()
    assert any(p.name.startswith("crosscoder_") for p in (out / "figures").glob("*.png"))


def test_demo_prints_the_key_table(demo_run, capsys):
    # the module fixture ran before capsys; run the cheapest demo (lab cached, no crosscoder) to see stdout
    _, out, cache, _ = demo_run
    rc = main(
        ["demo", "--small", "--no-crosscoder", "--out", str(out.parent / "r2"), "--cache-dir", str(cache)]
    )
    printed = capsys.readouterr()
    assert rc == 0
    lines = printed.out.splitlines()
    header = next(line for line in lines if "in_domain" in line)
    assert "near_domain" in header and "out_of_domain" in header
    # the feature block: one column per compared checkpoint; raw and floor beside each corrected value
    feat_header = next(line for line in lines if line.split()[:2] in (["sft", "rl"], ["rl", "sft"]))
    acc_rows = lines[lines.index(header) : lines.index(feat_header)]
    assert [line.split()[0] for line in acc_rows if line.split()[:1] in (["base"], ["sft"], ["rl"])] == [
        "base",
        "sft",
        "rl",
    ]
    body = lines[lines.index(feat_header) :]
    for row in ("reuse, raw", "reuse, floor (base vs base)", "reuse, corrected", "novelty, raw", "drift", "vs base"):
        assert any(line.startswith(row) for line in body), row
    summary = pd.read_csv(out.parent / "r2" / "summary.csv", index_col=0)
    for name in ("rl", "sft"):  # the sentences carry this run's numbers
        assert f"- {name}: raw reuse {summary.loc[name, 'reuse_raw']:.3f}" in printed.out
    assert "typically" not in printed.out and "forgets" not in printed.out
    assert "loading the cached lab" in printed.err
    assert not (out.parent / "r2" / "crosscoder").exists()


def test_second_demo_run_reuses_the_cached_lab(demo_run):
    _, out, cache, first = demo_run
    (lab,) = (cache / "lab").iterdir()
    stamp = (lab / "lab.json").stat().st_mtime_ns
    t = time.perf_counter()
    rc = main(["demo", "--small", "--quiet", "--out", str(out), "--cache-dir", str(cache)])
    second = time.perf_counter() - t
    assert rc == 0
    assert (lab / "lab.json").stat().st_mtime_ns == stamp  # not retrained
    assert [p.name for p in (cache / "lab").iterdir()] == [lab.name]
    assert second < first
    assert (out / "report.html").is_file()


def test_demo_help_says_what_how_long_and_where(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in (
        "report.html",
        "featdiff-report",
        "FEATDIFF_CACHE",
        "~/.cache/featdiff",
        "minute",
        "--small",
        "--no-crosscoder",
        "--seed",
        "--quiet",
        "--cache-dir",
        "SFT",
        "RL",
    ):
        assert needle in text, needle


@pytest.fixture
def checkpoints(tmp_path):
    from transformer_lens import HookedTransformer

    import featdiff as fd

    cfg = dict(
        n_layers=2, d_model=16, n_ctx=12, d_head=4, n_heads=4, d_mlp=32, d_vocab=20, act_fn="gelu", seed=0
    )
    base = HookedTransformer(cfg)
    rl = HookedTransformer(cfg)
    rl.load_state_dict(base.state_dict())
    with torch.no_grad():
        rl.blocks[0].mlp.W_in.add_(0.1 * torch.randn_like(rl.blocks[0].mlp.W_in))
    paths = fd.save_model(base, tmp_path / "base"), fd.save_model(rl, tmp_path / "rl")
    tokens = torch.randint(0, 20, (48, 12), generator=torch.Generator().manual_seed(0))
    torch.save(tokens, tmp_path / "tokens.pt")
    return paths, tmp_path / "tokens.pt"


def test_compare_writes_the_comparison_folder(checkpoints, tmp_path, capsys):
    (base, rl), tokens = checkpoints
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            str(base),
            str(rl),
            "--tokens",
            str(tokens),
            "--out",
            str(out),
            "--hook",
            "blocks.1.hook_resid_post",
            "--d-sae",
            "32",
            "--k",
            "4",
            "--n-steps",
            "10",
            "--widen",
            "0",
        ]
    )
    assert rc == 0
    import featdiff as fd

    cmp = fd.Comparison.load(out)
    assert list(cmp.summary.index) == ["rl"] and cmp.meta["hook"] == "blocks.1.hook_resid_post"
    assert "width_check" not in cmp.meta and cmp.meta["sae"]["d_sae"] == 32  # --widen 0: no width check
    assert (out / "figures" / "comparison.png").is_file()
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table" in page
    assert "reuse" in capsys.readouterr().out


def test_bad_input_exits_2_with_one_line(checkpoints, tmp_path, capsys):
    (base, rl), _ = checkpoints
    bad = tmp_path / "floats.pt"
    torch.save(torch.randn(4, 5), bad)
    rc = main(["compare", str(base), str(rl), "--tokens", str(bad), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("featdiff compare: error:") and "integer" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()

    rc = main(
        ["compare", str(tmp_path / "missing"), str(rl), "--tokens", str(bad), "--out", str(tmp_path / "x")]
    )
    assert rc == 2
    rc = main(
        ["compare", str(base), str(rl), "--tokens", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 2 and "does not exist" in err
