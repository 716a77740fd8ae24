"""`featdiff compare` with named checkpoints and a text corpus, end to end at tiny size; `featdiff --version`;
bad text input and bad NAME=PATH arguments: one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import json

import pytest

import featdiff as fd
from conftest import WORDS, make_documents, make_text_checkpoint, make_word_tokenizer
from featdiff.cli import _checkpoint_specs, main
from featdiff.errors import FeatdiffError

SMALL = ["--d-sae", "32", "--k", "4", "--n-steps", "10", "--widen", "0", "--context-length", "16"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A tiny GPT-2 base with its word-level tokenizer, three post-trained variants, a .jsonl corpus."""
    root = tmp_path_factory.mktemp("family")
    paths = {"base": make_text_checkpoint(root / "base")}
    for i, (name, scale) in enumerate([("rl", 0.02), ("sft", 0.3), ("dpo", 0.1)], start=1):
        paths[name] = make_text_checkpoint(root / name, seed=i, scale=scale)
    swapped = list(WORDS)
    swapped[5], swapped[6] = swapped[6], swapped[5]
    paths["other_tok"] = make_text_checkpoint(root / "other_tok", seed=9, tokenizer=make_word_tokenizer(swapped))
    paths["no_tok"] = make_text_checkpoint(root / "no_tok", seed=9, tokenizer=False)
    with open(root / "corpus.jsonl", "w") as f:
        for i, doc in enumerate(make_documents(240, seed=1)):
            f.write(json.dumps({"id": i, "text": doc}) + "\n")
    (root / "empty.jsonl").write_text('{"text": ""}\n')
    (root / "body.jsonl").write_text('{"body": "the cat sat"}\n')
    return root, paths


def test_four_named_checkpoints_on_a_jsonl_corpus_end_to_end(family, capsys):
    root, p = family
    out, acts = root / "report", root / "acts"
    argv = ["compare", f"base={p['base']}", f"rl={p['rl']}", f"sft={p['sft']}", f"dpo={p['dpo']}",
            "--text", str(root / "corpus.jsonl"), "--out", str(out), "--activations-dir", str(acts),
            "--max-tokens", "1600", *SMALL]  # fmt: skip
    assert main(argv) == 0
    cmp = fd.Comparison.load(out)
    assert list(cmp.summary.index) == ["rl", "sft", "dpo"]
    assert sorted(cmp.meta["checkpoints"]) == ["base", "dpo", "rl", "sft"]
    text = cmp.meta["activations"]["text"]
    assert text["format"] == "jsonl" and text["context_length"] == 16 and text["packing"] == "pack"
    assert text["n_tokens"] == 1600 and text["stopped_at_max_tokens"] and text["n_windows"] == 100
    # every window's BOS is dropped; 100 windows x 15 tokens, less outliers
    assert 1400 <= cmp.meta["n_tokens"] <= 1500
    assert fd.ActivationSet.open(acts).names == ["base", "rl", "sft", "dpo"]  # --activations-dir kept them
    s = cmp.summary
    assert s[["reuse", "recombination", "novelty"]].sum(1).round(6).eq(1).all()
    # the larger the weight change, the less the base SAE explains (rl 0.02 < dpo 0.1 < sft 0.3)
    assert s.loc["rl", "transfer_fve"] > s.loc["dpo", "transfer_fve"] > s.loc["sft", "transfer_fve"]
    assert "base vs rl vs sft vs dpo" in (out / "report.html").read_text()
    assert "dpo" in capsys.readouterr().out


def test_bare_paths_keep_their_place_names(family, tmp_path):
    root, p = family
    assert _checkpoint_specs(["a", "b"]) == {"base": "a", "rl": "b"}
    assert _checkpoint_specs(["a", "b", "c", "dpo=d", "x.y-2=e"]) == {
        "base": "a", "rl": "b", "sft": "c", "dpo": "d", "x.y-2": "e"
    }  # fmt: skip
    assert _checkpoint_specs(["base=a", "runs/lr=1e-4"]) == {"base": "a", "rl": "runs/lr=1e-4"}  # a path with '='
    weird = tmp_path / "lr=3"
    weird.mkdir()
    assert _checkpoint_specs(["a", str(weird)]) == {"base": "a", "rl": str(weird)}
    out = tmp_path / "r"
    argv = ["compare", str(p["base"]), f"dpo={p['dpo']}", "--text", str(root / "corpus.jsonl"), "--out", str(out),
            "--packing", "truncate", "--quiet", *SMALL]  # fmt: skip
    assert main(argv) == 0
    cmp = fd.Comparison.load(out)
    assert list(cmp.summary.index) == ["dpo"] and cmp.meta["activations"]["text"]["packing"] == "truncate"
    assert cmp.meta["activations"]["text"]["n_windows"] == 240  # one window per document


@pytest.mark.parametrize(
    "args,needle",
    [
        (["a", "b", "c", "d"], "Checkpoint 'd' is number 4 and has no name; name every checkpoint after the third"),
        (["base=a", "=b"], "Checkpoint '=b' has an empty name"),
        (["base=a", "rl="], "Checkpoint 'rl' has no path"),
        (["base=a", "my model=b"], "Checkpoint name 'my model'"),
        (["base=a", "rl=b", "rl=c"], "Two checkpoints are named 'rl' (rl=b and rl=c)"),
        (["rl=a", "b"], "Two checkpoints are named 'rl'"),
        (["base=a"], "needs the base and at least one post-trained checkpoint"),
    ],
)
def test_bad_checkpoint_arguments(args, needle):
    with pytest.raises(FeatdiffError) as e:
        _checkpoint_specs(args)
    assert needle in str(e.value)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"featdiff {fd.__version__}"


def _case(root, p, case: str) -> list[str]:
    corpus = str(root / "corpus.jsonl")
    two = [f"base={p['base']}", f"rl={p['rl']}"]
    return {
        "missing corpus": [*two, "--text", str(root / "nope.jsonl")],
        "corpus of an unknown kind": [*two, "--text", str(p["base"] / "config.json")],
        "jsonl line without the field": [*two, "--text", str(root / "body.jsonl")],
        "--text-field that no line has": [*two, "--text", corpus, "--text-field", "body"],
        "empty text field": [*two, "--text", str(root / "empty.jsonl")],
        "tokenizer mismatch": [*two, f"other={p['other_tok']}", "--text", corpus],
        "checkpoint without a tokenizer": [*two, f"dpo={p['no_tok']}", "--text", corpus],
        "--context-length beyond n_ctx": [*two, "--text", corpus, "--context-length", "64"],
        "--text and --tokens": [*two, "--text", corpus, "--tokens", corpus],
        "--text-field without --text": [*two, "--text-field", "body"],
        "duplicate names": [f"base={p['base']}", f"base={p['rl']}", "--text", corpus],
        "empty name": [f"base={p['base']}", f"={p['rl']}", "--text", corpus],
        "no data": two,
    }[case]


CASES = {
    "missing corpus": "nope.jsonl' does not exist; give a .txt, .jsonl or .parquet file",
    "corpus of an unknown kind": "unknown kind (.json)",
    "jsonl line without the field": "has no field 'text' (its fields: 'body'); pass --text-field naming the field",
    "--text-field that no line has": "Line 1 of the text corpus",
    "empty text field": "holds no text (all 1 of its documents are empty)",
    "tokenizer mismatch": "and 'other' (",
    "checkpoint without a tokenizer": "checkpoint 'dpo' (",
    "--context-length beyond n_ctx": "--context-length 64 is longer than checkpoint 'base' takes (n_ctx=32); pass "
    "--context-length of at most 32",
    "--text and --tokens": "Give --tokens or --text, not both",
    "--text-field without --text": "--text-field set(s) how --text is read; give --text FILE too",
    "duplicate names": "Two checkpoints are named 'base'",
    "empty name": "has an empty name",
    "no data": "pass --tokens (token ids, shape (batch, seq)) or --text;",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_text_input_is_one_line_exit_2_and_nothing_written(family, case, capsys):
    root, p = family
    out, acts, ck = root / f"out-{case}", root / f"acts-{case}", root / f"ck-{case}"
    argv = ["compare", *_case(root, p, case), "--out", str(out), "--activations-dir", str(acts),
            "--checkpoint-dir", str(ck), "--quiet", *SMALL[:-2]]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("featdiff compare: error: "), err
    assert CASES[case] in err, err
    for python_advice in ("texts=", "tokens=", "text_field=", "context_length="):
        assert python_advice not in err, err
    assert not out.exists() and not acts.exists() and not ck.exists()
