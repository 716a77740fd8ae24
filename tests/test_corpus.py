"""Text corpora (featdiff.activations.corpus): every format, packing and truncation, BOS, max_tokens, streaming in small
chunks, the tokenizer checks, bad input, and collect_activations on text."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import WORDS, make_documents, make_text_checkpoint, make_word_tokenizer
from featdiff.activations.collect import collect_activations
from featdiff.activations.corpus import TextCorpus
from featdiff.activations.tokens import check_tokenizers
from featdiff.errors import FeatdiffError
from featdiff.models.load import load_model

HOOK = "blocks.0.hook_resid_post"
ID = {w: i for i, w in enumerate(WORDS)}


def ids(text: str) -> list[int]:
    return [ID[w] for w in text.split()]


def all_windows(corpus: TextCorpus, tokenizer=None, context_length=None, batch_size=4):
    """Every window as a list of its real ids (padding removed)."""
    out = []
    for tok, mask in corpus.windows(tokenizer or make_word_tokenizer(), context_length, batch_size):
        out += [t[m].tolist() for t, m in zip(tok, mask, strict=True)]
    return out


@pytest.fixture(scope="module")
def docs():
    return make_documents(30, seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, docs):
    """The same documents in every format (plus a few extra records the readers must skip or ignore)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "lines.txt").write_text("\n".join(docs) + "\n")
    (root / "paragraphs.txt").write_text("\n\n".join(d.replace(" then ", "\nthen ") for d in docs) + "\n")
    with open(root / "c.jsonl", "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "body": d}) + "\n")
            if i == 3:
                f.write("\n")  # a blank line between records is skipped
    pq.write_table(pa.table({"body": docs, "id": list(range(len(docs)))}), root / "c.parquet", row_group_size=7)
    (root / "pq").mkdir()
    pq.write_table(pa.table({"body": docs[:10]}), root / "pq" / "a.parquet")
    pq.write_table(pa.table({"body": docs[10:]}), root / "pq" / "b.parquet")
    return root


def test_every_format_reads_the_same_documents(files, docs):
    assert list(TextCorpus(docs).documents()) == docs
    assert list(TextCorpus(files / "lines.txt").documents()) == docs
    para = list(TextCorpus(files / "paragraphs.txt").documents())  # auto: blank lines separate documents
    assert [p.replace("\n", " ") for p in para] == docs
    assert list(TextCorpus(files / "paragraphs.txt", txt_documents="lines").documents()) == [
        line for d in docs for line in d.replace(" then ", "\nthen ").split("\n")
    ]
    assert list(TextCorpus(files / "c.jsonl", text_field="body").documents()) == docs
    assert list(TextCorpus(str(files / "c.parquet"), text_field="body", chunk_documents=4).documents()) == docs
    assert list(TextCorpus(files / "pq", text_field="body").documents()) == docs
    assert TextCorpus(files / "pq", text_field="body").format == "parquet"


def test_datasets_save_to_disk_folder_is_read_without_datasets(tmp_path, docs):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"body": docs, "n": list(range(len(docs)))})
    ds.shuffle(seed=0).save_to_disk(str(tmp_path / "ds"), num_shards=2)
    want = list(ds.shuffle(seed=0)["body"])
    corpus = TextCorpus(tmp_path / "ds", text_field="body", chunk_documents=3)
    assert corpus.format == "datasets" and list(corpus.documents()) == want
    datasets.DatasetDict({"train": ds, "test": ds.select([0, 1])}).save_to_disk(str(tmp_path / "dd"))
    assert list(TextCorpus(tmp_path / "dd", text_field="body").documents()) == docs  # the train split
    datasets.DatasetDict({"a": ds, "b": ds}).save_to_disk(str(tmp_path / "ab"))
    with pytest.raises(FeatdiffError, match=r"splits \['a', 'b'\] and none is 'train'; give one split's folder"):
        TextCorpus(tmp_path / "ab", text_field="body")
    with pytest.raises(FeatdiffError, match=r"has no field 'text' \(its fields: 'body', 'n'\); pass text_field="):
        list(TextCorpus(tmp_path / "ds").documents())


def test_packing_joins_documents_with_eos_and_cuts_full_windows():
    corpus = TextCorpus(["the cat sat", "a dog ran on the mat", "it was red"], context_length=5)
    bos, eos = ID["<bos>"], ID["<eos>"]
    stream = ids("the cat sat") + [eos] + ids("a dog ran on the mat") + [eos] + ids("it was red")
    want = [[bos, *stream[i : i + 4]] for i in range(0, len(stream), 4)]  # 14 tokens: 3 full windows + 2
    stats: dict = {}
    got = []
    for tok, mask in corpus.windows(make_word_tokenizer(), batch_size=2, stats=stats):
        got += [t[m].tolist() for t, m in zip(tok, mask, strict=True)]
    assert got == want and [len(w) for w in got] == [5, 5, 5, 3]
    assert stats["n_windows"] == 4 and stats["n_tokens"] == 18 and stats["n_documents"] == 3
    # the last window is padded with 0 and masked
    (tok, mask), *_ = list(corpus.windows(make_word_tokenizer(), batch_size=4))
    assert tok[3].tolist() == [*want[3], 0, 0] and mask[3].tolist() == [True] * 3 + [False] * 2


def test_truncation_is_one_window_per_document():
    corpus = TextCorpus(["the cat sat on the mat", "a dog", "", "  "], context_length=4, packing="truncate")
    stats: dict = {}
    got = []
    for tok, mask in corpus.windows(make_word_tokenizer(), batch_size=8, stats=stats):
        got += [t[m].tolist() for t, m in zip(tok, mask, strict=True)]
        assert tok.shape == (2, 4)  # padded to the batch's longest window
    bos = ID["<bos>"]
    assert got == [[bos, *ids("the cat sat")], [bos, *ids("a dog")]]
    assert stats["n_truncated_documents"] == 1 and stats["n_tokens_cut"] == 3 and stats["n_empty_documents"] == 2


def test_bos_follows_the_tokenizer_unless_asked():
    no_bos = make_word_tokenizer(bos=False)
    eos = ID["<eos>"]
    docs = ["the cat", "a dog ran"]
    assert all_windows(TextCorpus(docs, context_length=3), no_bos) == [
        [*ids("the cat"), eos], ids("a dog ran")
    ]  # no BOS token: windows start with text
    assert all_windows(TextCorpus(docs, context_length=3, prepend_bos=False)) == [
        [*ids("the cat"), eos], ids("a dog ran")
    ]
    with pytest.raises(FeatdiffError, match="prepend_bos=True, but the tokenizer has no BOS token"):
        all_windows(TextCorpus(docs, context_length=3, prepend_bos=True), no_bos)


def test_max_tokens_stops_the_reading(docs):
    full = all_windows(TextCorpus(docs, context_length=8))
    for cap in (5, 8, 21, 64):
        stats: dict = {}
        got = []
        for tok, mask in TextCorpus(docs, context_length=8, max_tokens=cap).windows(make_word_tokenizer(), stats=stats):
            got += [t[m].tolist() for t, m in zip(tok, mask, strict=True)]
        flat = [i for w in got for i in w]
        assert len(flat) == cap == stats["n_tokens"] and stats["stopped_at_max_tokens"]
        assert flat == [i for w in full for i in w][:cap]
    truncated = all_windows(TextCorpus(docs, context_length=6, packing="truncate", max_tokens=20))
    assert sum(map(len, truncated)) == 20 and len(truncated) == 4


@pytest.mark.parametrize("packing", ["pack", "truncate"])
def test_streaming_in_tiny_chunks_gives_the_same_windows(files, packing):
    whole = TextCorpus(files / "c.jsonl", text_field="body", context_length=7, packing=packing, chunk_documents=10_000)
    tiny = whole.replace(chunk_documents=1)
    pq_tiny = TextCorpus(files / "c.parquet", text_field="body", context_length=7, packing=packing, chunk_documents=2)
    want = all_windows(whole, batch_size=3)
    assert len(want) >= 8
    assert all_windows(tiny, batch_size=3) == want == all_windows(pq_tiny, batch_size=5)


def _bad(tmp_path, name: str, text: str | bytes):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_bad_corpora_raise_one_clear_error(tmp_path):
    def read(corpus):
        return all_windows(corpus, context_length=8)

    plain = tmp_path / "plain"
    plain.mkdir()
    _bad(plain, "notes.md", "my notes")
    cases = [
        (lambda: TextCorpus(tmp_path / "missing.jsonl"), r"'.*missing.jsonl' does not exist; give a .txt, .jsonl"),
        (lambda: TextCorpus(_bad(tmp_path, "c.csv", "a,b\n")), r"unknown kind \(.csv\)"),
        (lambda: TextCorpus([]), "empty list; give at least one document"),
        (lambda: TextCorpus(["a", 3]), "item 1 is a int"),
        (lambda: TextCorpus(42), "got int"),
        (lambda: TextCorpus(["a"], text_field=""), "text_field= must name the field"),
        (lambda: TextCorpus(["a"], packing="chunk"), r"'packing' parameter of TextCorpus must be one of \['pack', 'truncate'\]"),
        (lambda: TextCorpus(["a"], context_length=1), "context_length"),
        (lambda: TextCorpus(plain), r"neither a datasets save_to_disk folder \(state.json\) nor a folder of .parquet"),
        (lambda: read(TextCorpus(_bad(tmp_path, "j1.jsonl", '{"text": "the cat"}\n{"text": "a dog"\n'))),
         r"Line 2 of the text corpus .*j1.jsonl' is not JSON"),
        (lambda: read(TextCorpus(_bad(tmp_path, "j2.jsonl", '{"text": "the cat"}\n{"body": "a"}\n'))),
         r"Line 2 .* has no field 'text' \(its fields: 'body'\); pass text_field= naming"),
        (lambda: read(TextCorpus(_bad(tmp_path, "j3.jsonl", '{"text": null}\n'))), "holds a NoneType, not a string"),
        (lambda: read(TextCorpus(_bad(tmp_path, "j4.jsonl", '["the cat"]\n'))), "is a JSON list, not an object"),
        (lambda: read(TextCorpus(_bad(tmp_path, "j5.jsonl", '{"text": ""}\n{"text": "  "}\n'))),
         r"holds no text \(all 2 of its documents are empty\); give a corpus with text in the field 'text'"),
        (lambda: read(TextCorpus(_bad(tmp_path, "empty.txt", ""))), r"holds no text \(it holds no documents\)"),
        (lambda: read(TextCorpus(_bad(tmp_path, "latin.txt", b"caf\xe9 au lait\n"))), "is not UTF-8 text"),
        (lambda: read(TextCorpus(_bad(tmp_path, "bad.parquet", b"PAR1 not really"))), r"Cannot read the text corpus .*bad.parquet"),
    ]
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "null.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    cases += [
        (lambda: read(TextCorpus(tmp_path / "null.parquet")), "row 1 of the column 'text' is null"),
        (lambda: read(TextCorpus(tmp_path / "ints.parquet")), "holds int64, not strings"),
    ]
    for make, pattern in cases:
        with pytest.raises(FeatdiffError, match=pattern):
            make()
            pytest.fail(f"no error for {pattern!r}")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    swapped = list(WORDS)
    swapped[5], swapped[6] = swapped[6], swapped[5]  # 'a' and 'cat' trade ids
    return {
        "base": make_text_checkpoint(root / "base"),
        "rl": make_text_checkpoint(root / "rl", seed=1, scale=0.05),
        "bare": make_text_checkpoint(root / "bare", tokenizer=False),
        "other": make_text_checkpoint(root / "other", tokenizer=make_word_tokenizer(swapped)),
        "no_bos": make_text_checkpoint(root / "no_bos", tokenizer=make_word_tokenizer(bos=False)),
    }


def test_checkpoints_must_share_the_tokenizer(ckpts):
    models = {n: load_model(p) for n, p in ckpts.items()}
    check_tokenizers({"base": models["base"], "rl": models["rl"]}, "base")  # the same files: silent
    with pytest.raises(FeatdiffError, match=r"Checkpoints 'base' \(.*base\) and 'other' \(.*other\) have different "
                       r"tokenizers \(vocabularies of 22 and 22 tokens differ; e.g. \['a', 'cat'\] have other ids\)"):
        check_tokenizers({"base": models["base"], "other": models["other"]}, "base")
    with pytest.raises(FeatdiffError, match=r"have different tokenizers \(bos_token_id 1 vs "):
        check_tokenizers({"base": models["base"], "no_bos": models["no_bos"]}, "base")
    with pytest.raises(FeatdiffError, match=r"checkpoint 'bare' \(.*bare\) has none: save the tokenizer"):
        collect_activations({"base": ckpts["base"], "bare": ckpts["bare"]}, texts=["the cat"], progress=False)
    with pytest.raises(FeatdiffError, match=r"context_length=64 is longer than checkpoint 'base' takes \(n_ctx=32\)"):
        collect_activations({"base": ckpts["base"]}, texts=TextCorpus(["the cat"], context_length=64), progress=False)
    with pytest.raises(FeatdiffError, match=r"token ids \(tokens=\) or text \(texts=\), not both"):
        collect_activations({"base": ckpts["base"]}, torch.zeros(1, 3, dtype=torch.long), texts=["a"], progress=False)


def test_collect_on_text_streams_and_equals_the_same_windows_as_token_ids(ckpts, files, tmp_path):
    models = {"base": ckpts["base"], "rl": ckpts["rl"]}
    corpus = TextCorpus(files / "c.jsonl", text_field="body", context_length=12, chunk_documents=3)
    tok, mask = corpus.replace(chunk_documents=1000).windows(make_word_tokenizer(), batch_size=1000).__next__()
    ref = collect_activations(models, tok, HOOK, attention_mask=mask, batch_size=4, progress=False)
    got = collect_activations(models, texts=corpus, hook=HOOK, batch_size=4, progress=False)
    disk = collect_activations(models, texts=corpus, hook=HOOK, batch_size=4, progress=False, out_dir=tmp_path / "a",
                               shard_tokens=50)  # fmt: skip
    assert got.n_tokens == ref.n_tokens > 100
    for acts in (got, disk):
        assert torch.equal(acts.token_ids, ref.token_ids) and torch.equal(acts.sequence_ids, ref.sequence_ids)
        for n in models:
            assert torch.allclose(acts[n], ref[n], atol=1e-6)
    assert not torch.allclose(got["base"], got["rl"], atol=1e-3)  # rl's weights differ
    meta = got.meta["text"]
    assert meta["format"] == "jsonl" and meta["text_field"] == "body" and meta["context_length"] == 12
    assert meta["n_documents"] == 30 and meta["n_windows"] == tok.shape[0] and meta["bos_token_id"] == ID["<bos>"]
    assert got.meta["n_dropped_bos"] == got.meta["n_dropped_first"] == tok.shape[0]  # every window starts with BOS
    assert json.loads(json.dumps(disk.meta))["text"] == meta  # JSON all the way (meta.json)


def test_a_featdiff_folder_carries_its_tokenizer(ckpts, tmp_path):
    from featdiff.models.folder import save_model

    folder = save_model(load_model(ckpts["rl"]), tmp_path / "rl_featdiff")  # tokenizer/ travels with it
    docs = make_documents(12, seed=3)
    hf = collect_activations({"base": ckpts["base"], "rl": ckpts["rl"]}, texts=docs, hook=HOOK, progress=False)
    fd_ = collect_activations({"base": ckpts["base"], "rl": folder}, texts=docs, hook=HOOK, progress=False)
    assert torch.equal(hf.token_ids, fd_.token_ids) and torch.allclose(hf["rl"], fd_["rl"], atol=1e-6)
    alone = collect_activations({"base": folder}, texts=docs, hook=HOOK, progress=False)  # its tokenizer tokenizes
    assert torch.equal(alone.token_ids, hf.token_ids) and alone.meta["text"]["context_length"] == 32
