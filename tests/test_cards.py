"""Feature cards (featdiff.report.cards): contexts, frequency, logits, related base features, HTML, JSON, report."""

import json

import pytest
import torch

import featdiff as fd
from featdiff.dictionaries.sae import sae_from_dictionary
from featdiff.dictionaries.stats import encode
from featdiff.report.card_html import pick_features
from featdiff.report.cards import FeatureCard, Unembedding

HOOK = "blocks.1.hook_resid_post"


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def setup():
    return _setup()


def _setup():
    """A tokenizer-less two-layer model (base) and a copy with other unembedding / final-norm weights (rl),
    their paired activations, and planted SAEs: rl's first 10 rows are base rows (reused), the next 4 are
    sums of 3 base rows (recombined), the last 4 random (novel)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, n_ctx=12, d_head=4, n_heads=4, d_vocab=23, act_fn="relu", d_mlp=32,
        tokenizer_name=None, seed=0,
    )  # fmt: skip
    base, rl = HookedTransformer(cfg), HookedTransformer(cfg)
    rl.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        rl.ln_final.w.copy_(0.5 + torch.rand(16, generator=g))  # a final-norm scale that is not all ones
        rl.W_U.add_(0.3 * torch.randn(rl.W_U.shape, generator=g))
    tokens = torch.randint(0, 23, (40, 12), generator=g)
    acts = fd.collect_activations({"base": base, "rl": rl}, tokens, hook=HOOK, progress=False)
    W = _unit(torch.randn(18, 16, generator=g))
    combos = torch.stack([_unit(W[[i, i + 4, i + 8]].sum(0)) for i in range(4)])
    W_rl = torch.cat([W[:10], combos, _unit(torch.randn(4, 16, generator=g))])
    # matched filters on centred activations: b_dec = the mean, so features fire on both sides of it
    mean = acts["base"].mean(0)
    saes = {
        "base": sae_from_dictionary(W, k=3, b_dec=mean),
        "rl": sae_from_dictionary(W_rl, k=3, b_dec=mean),
    }
    cmp = fd.compare_dictionaries(saes, acts, progress=False, n_bootstrap=10)
    return {"models": {"base": base, "rl": rl}, "acts": acts, "saes": saes, "cmp": cmp}


def test_statuses_planted(setup):
    counts = setup["cmp"].features["status"].astype(str).value_counts()
    assert counts.get("reused", 0) >= 8 and counts.get("recombined", 0) >= 2


def test_contexts_are_the_codes_in_descending_order(setup):
    acts, saes = setup["acts"], setup["saes"]
    codes = encode(saes["rl"], acts["rl"])
    for f in (0, 11, 15):
        card = setup["cmp"].feature_card("rl", f, n_contexts=6, before=4, after=2)
        assert card.text_source == "ids"  # no tokenizer: token ids as text
        tops = [c.value for c in card.contexts]
        assert len(tops) == min(6, int((codes[:, f] > 0).sum())) and len(tops) > 0
        assert tops == sorted(tops, reverse=True)
        assert tops[0] == pytest.approx(float(codes[:, f].max()), rel=1e-5)
        assert card.frequency == pytest.approx(float((codes[:, f] > 0).float().mean()), abs=1e-6)
        for c in card.contexts:
            rows = list(range(c.row - c.center, c.row - c.center + len(c.values)))
            assert torch.allclose(torch.tensor(c.values), codes[rows, f], atol=1e-5)
            assert c.token_ids == acts.token_ids[rows].tolist()
            assert c.tokens == [str(t) for t in c.token_ids]
            assert set(acts.sequence_ids[rows].tolist()) == {c.sequence}  # one sequence per window
            assert len(c.values) <= 4 + 1 + 2


def test_logits_are_the_direct_path(setup):
    rl = setup["models"]["rl"]
    f = 3
    card = setup["cmp"].feature_card("rl", f, models=setup["models"], n_logits=5)
    direct = (setup["saes"]["rl"].W_dec[f].detach() * rl.ln_final.w.detach()) @ rl.W_U.detach()
    up, down = direct.topk(5), direct.topk(5, largest=False)
    assert [x.token_id for x in card.promoted] == up.indices.tolist()
    assert [x.value for x in card.promoted] == pytest.approx(up.values.tolist(), abs=1e-5)
    assert [x.token_id for x in card.suppressed] == down.indices.tolist()
    assert [x.value for x in card.suppressed] == pytest.approx(down.values.tolist(), abs=1e-5)
    # the final-norm scale matters here: the test tells the two formulas apart
    plain = setup["saes"]["rl"].W_dec[f].detach() @ rl.W_U.detach()
    assert (plain - direct).abs().max() > 0.05
    assert setup["cmp"].feature_card("rl", f).promoted is None  # no model given: no logits


def test_related_base_features_follow_the_table(setup):
    cmp = setup["cmp"]
    feats = cmp.features.set_index("feature")
    seen = set()
    for f, row in feats.iterrows():
        status = str(row["status"])
        if status in seen or status == "dead":
            continue
        seen.add(status)
        card = cmp.feature_card("rl", int(f), n_contexts=2)
        assert card.status == status
        if status in ("reused", "split"):
            assert [(r.feature, r.role) for r in card.related] == [(int(row["match"]), "match")]
            assert card.related[0].weight == pytest.approx(row["similarity"])
        elif status == "recombined":
            assert [(r.feature, r.weight) for r in card.related] == [(int(a), pytest.approx(b)) for a, b in row["components"]]
        else:
            cos = _unit(setup["saes"]["base"].W_dec.detach()) @ _unit(setup["saes"]["rl"].W_dec[int(f)].detach())
            assert [r.feature for r in card.related] == cos.topk(3).indices.tolist()
        for r in card.related:  # each base feature with its own contexts, from the base's codes
            base_codes = encode(setup["saes"]["base"], setup["acts"]["base"])[:, r.feature]
            assert r.card.checkpoint == "base" and r.card.related == []
            if r.card.contexts:
                assert r.card.contexts[0].value == pytest.approx(float(base_codes.max()), rel=1e-5)
    assert {"reused", "recombined"} <= seen


def test_json_round_trip_and_html(setup):
    card = setup["cmp"].feature_card("rl", 12, models=setup["models"])
    d = json.loads(json.dumps(card.to_dict()))
    assert d == card.to_dict()
    back = FeatureCard.from_dict(d)
    assert back == card
    page = card._repr_html_()
    assert "<script" not in page and page.count('class="fd-ctx"') == len(card.contexts) + sum(
        len(r.card.contexts) for r in card.related
    )
    assert "background:rgba(255,140,0,1.00)" in page  # the top token of the top context at full colour


def test_missing_inputs_say_what_to_pass(setup, tmp_path):
    loaded = fd.Comparison.load(setup["cmp"].to_dir(tmp_path / "cmp", figures=False))
    with pytest.raises(fd.FeatdiffError, match="pass dictionaries= and acts="):
        loaded.feature_card("rl", 0)
    card = loaded.feature_card("rl", 0, dictionaries=setup["saes"], acts=setup["acts"])
    assert card == setup["cmp"].feature_card("rl", 0)
    with pytest.raises(fd.FeatdiffError, match="has 18 features"):
        setup["cmp"].feature_card("rl", 18)
    with pytest.raises(fd.FeatdiffError, match="No dictionary for checkpoint 'sft'"):
        setup["cmp"].feature_card("sft", 0)
    with pytest.raises(fd.FeatdiffError, match="'n_contexts' parameter"):
        setup["cmp"].feature_card("rl", 0, n_contexts=-1)
    with pytest.raises(fd.FeatdiffError, match="'related' parameter"):
        setup["cmp"].feature_cards([("rl", 0)], related="cards")


def test_vocabulary_text():
    u = Unembedding(torch.eye(3), vocabulary=["<bos>", "1", "="])
    assert u.text_source == "vocabulary" and u.token_text([2, 1, 7]) == ["=", "1", "7"]


def test_report_has_the_card_section(setup, tmp_path):
    from featdiff.report.html import write_html_report

    page = write_html_report(tmp_path / "r.html", setup["cmp"], cards=2).read_text()
    assert "<h2>Feature cards</h2>" in page
    picks = pick_features(setup["cmp"].features, "rl", 2)
    n = sum(len(v) for v in picks.values())
    assert n >= 4 and page.count('<details class="fd-details">') == n
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "most drifted" in page and "most recombined" in page
    without = write_html_report(tmp_path / "s.html", setup["cmp"], cards=0).read_text()
    assert "<h2>Feature cards</h2>" not in without


def test_export_features_carries_the_cards(setup, tmp_path):
    cmp = setup["cmp"]
    path = fd.export_features(cmp, tmp_path / "features.json", models=setup["models"], n_contexts=4, n_logits=3)
    doc = json.loads(path.read_text())
    assert doc["featdiff_feature_json"] == 2 and doc["cards"] is True and doc["reference"] == "base"
    assert doc["text_source"] == "ids" and doc["n_tokens"] == setup["acts"].n_tokens
    recs = {r["feature"]: r for r in doc["features"]}
    assert len(recs) == len(cmp.features) == 18
    for f in (0, 10, 14):
        card = cmp.feature_card("rl", f, models=setup["models"], n_contexts=4, n_logits=3)
        r = recs[f]
        assert r["status"] == card.status and r["frac_nonzero"] == pytest.approx(card.frequency)
        assert [a["values"] for a in r["activations"]] == [pytest.approx(c.values) for c in card.contexts]
        assert [a["max_value"] for a in r["activations"]] == sorted((a["max_value"] for a in r["activations"]), reverse=True)
        for a in r["activations"]:
            assert a["values"][a["max_value_token_index"]] == a["max_value"]
            assert a["tokens"] == [str(t) for t in a["token_ids"]]
        assert r["pos_token_ids"] == [x.token_id for x in card.promoted] and len(r["neg_values"]) == 3
        assert [(c["feature"], c["role"]) for c in r["top_components"]] == [(x.feature, x.role) for x in card.related]
    assert [c["feature"] for c in recs[10]["top_components"]] == [a for a, _ in cmp.features.loc[10, "components"]]


def test_every_exported_key_is_documented(setup, tmp_path):
    from pathlib import Path

    doc = json.loads(fd.export_features(setup["cmp"], tmp_path / "f.json", models=setup["models"]).read_text())
    page = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
    rec = doc["features"][0]
    keys = [*doc, *rec, *rec["activations"][0], *rec["top_components"][0]]
    assert [k for k in keys if f"`{k}`" not in page and f".{k}`" not in page] == []


def test_compare_checkpoints_keeps_what_cards_need(setup):
    base, rl = setup["models"]["base"], setup["models"]["rl"]
    rl.featdiff_vocabulary = [f"t{i}" for i in range(23)]  # as featdiff.lab.load attaches to the lab's models
    try:
        tokens = torch.randint(0, 23, (48, 12), generator=torch.Generator().manual_seed(1))
        cmp = fd.compare_checkpoints(
            base, rl, tokens=tokens, hook=HOOK, d_sae=24, k=3, n_replicas=0, train_kwargs={"n_steps": 40},
            progress=False,
        )  # fmt: skip
    finally:
        del rl.featdiff_vocabulary
    f = int(cmp.features["frequency"].idxmax())
    card = cmp.feature_card("rl", int(cmp.features.loc[f, "feature"]), n_logits=4)
    assert card.text_source == "vocabulary" and card.contexts
    assert all(t == f"t{i}" for c in card.contexts for t, i in zip(c.tokens, c.token_ids, strict=True))
    direct = (cmp.dictionaries["rl"].W_dec[card.feature].detach() * rl.ln_final.w.detach()) @ rl.W_U.detach()
    assert [x.token_id for x in card.promoted] == direct.topk(4).indices.tolist()
    assert card.related and all(r.card.text_source == "ids" for r in card.related)  # base: no vocabulary


def test_crosscoder_cards(setup):
    acts = setup["acts"]
    cc = fd.train_crosscoder(acts, d_sae=16, k=4, seed=0, progress=False, n_steps=40)
    cmp = fd.compare_crosscoder(cc, acts, progress=False)
    codes = cc.encode_acts(acts)
    f = int(codes.gt(0).sum(0).argmax())
    card = cmp.feature_card("rl", f, n_contexts=3)
    assert card.frequency == pytest.approx(float(codes[:, f].gt(0).float().mean()), abs=1e-6)
    assert card.contexts[0].value == pytest.approx(float(codes[:, f].max()), rel=1e-5)
    a, b = cc.decoder("rl")[f], cc.decoder("base")[f]
    assert [(r.feature, r.role) for r in card.related] == [(f, "latent")]
    assert card.related[0].weight == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-5)
