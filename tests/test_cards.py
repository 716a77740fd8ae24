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
    assert doc["featdiff_feature_json"] == 3 and doc["cards"] is True and doc["reference"] == "base"
    assert doc["text_source"] == "ids" and doc["n_tokens"] == setup["acts"].n_tokens
    recs = {r["feature"]: r for r in doc["features"] if r["kind"] == "target"}
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
    ref = next(r for r in doc["features"] if r["kind"] == "reference" and r["matched_by"])
    keys = [*doc, *rec, *rec["activations"][0], *rec["top_components"][0], *ref, *ref["matched_by"][0]]
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


def test_reference_features_get_records_with_both_sides_of_every_match(setup, tmp_path):
    cmp, models = setup["cmp"], setup["models"]
    path = fd.export_features(cmp, tmp_path / "features.json", models=models, n_contexts=4, n_logits=3)
    doc = json.loads(path.read_text())
    refs = {r["feature"]: r for r in doc["features"] if r["kind"] == "reference"}
    assert sorted(refs) == list(range(18)) and all(r["checkpoint"] == "base" for r in refs.values())
    targets = [r for r in doc["features"] if r["kind"] == "target"]
    base_codes = encode(setup["saes"]["base"], setup["acts"]["base"])
    n_matches = 0
    for t in targets:
        for c in t["top_components"]:
            r = refs[c["feature"]]  # the other side: its own record, contexts and logits
            assert {"checkpoint": t["checkpoint"], "feature": t["feature"], "role": c["role"],
                    "weight": pytest.approx(c["weight"])} in r["matched_by"]  # fmt: skip
            n_matches += c["role"] == "match"
    assert n_matches >= 8
    for m in {c["feature"] for t in targets for c in t["top_components"] if c["role"] == "match"}:
        card = cmp.feature_card("base", m, models=models, n_contexts=4, n_logits=3)
        r = refs[m]
        assert r["activations"] and r["activations"][0]["max_value"] == pytest.approx(float(base_codes[:, m].max()), rel=1e-5)
        assert [a["values"] for a in r["activations"]] == [pytest.approx(c.values) for c in card.contexts]
        direct = (setup["saes"]["base"].W_dec[m].detach() * models["base"].ln_final.w.detach()) @ models["base"].W_U.detach()
        assert r["pos_token_ids"] == direct.topk(3).indices.tolist()  # the base's own unembedding
    # and in a card: the matched base feature beside the target, with its contexts and logits
    f = next(t["feature"] for t in targets if t["status"] == "reused")
    card = cmp.feature_card("rl", f, models=models)
    assert card.promoted is not None and card.related[0].card.promoted is not None
    assert card.related[0].card.contexts and card.contexts


def _repeated_acts():
    """Token windows that repeat: sequence 0's tokens and activations five times, then five fainter random
    sequences (6 tokens each)."""
    g = torch.Generator().manual_seed(3)
    a = torch.rand(6, 4, generator=g) + 0.5
    x = torch.cat([a] * 5 + [0.1 * torch.rand(6, 4, generator=g) for _ in range(5)])
    ids = torch.cat([torch.tensor([0, 1, 2, 3, 1, 2])] * 5 + [torch.randint(4, 9, (6,), generator=g) for _ in range(5)])
    seq = torch.arange(60) // 6
    return fd.ActivationSet.from_tensors({"base": x, "rl": x}, token_ids=ids, sequence_ids=seq), a


def test_identical_contexts_are_shown_once_with_their_count():
    acts, a = _repeated_acts()
    saes = {"base": sae_from_dictionary(torch.eye(4), k=4), "rl": sae_from_dictionary(torch.eye(4), k=4)}
    card = fd.feature_card(saes, acts, "rl", 0, n_contexts=3, before=2, after=1, related=False)
    windows = [(tuple(c.token_ids), c.center) for c in card.contexts]
    assert len(set(windows)) == len(windows) == 3
    # the repeated sequence's three top tokens; of the third's five copies only two were among the top
    # n_contexts * dedupe_pool = 12 rows read
    assert [c.repeats for c in card.contexts] == [5, 5, 2]
    assert [c.value for c in card.contexts] == pytest.approx(a[:, 0].topk(3).values.tolist())
    assert "5x)" in card._repr_html_()
    # without de-duplication (a pool of n_contexts rows) the same window fills the card
    raw = fd.feature_card(saes, acts, "rl", 0, n_contexts=3, before=2, after=1, related=False, dedupe_pool=1)
    assert len({(tuple(c.token_ids), c.center) for c in raw.contexts}) == 1


@pytest.fixture(scope="module")
def replica_setup():
    """A recombination whose second component only a base replica has: rl's row 8 is 0.6 q6 + 0.8 q10,
    the base SAE has q0..q9, its replica q0..q9 and q10."""
    g = torch.Generator().manual_seed(5)
    q = torch.linalg.qr(torch.randn(16, 16, generator=g))[0].T  # orthonormal rows
    codes = torch.relu(torch.randn(3000, 11, generator=g)) * (torch.rand(3000, 11, generator=g) < 0.3)
    x = codes @ q[:11]
    token_ids = torch.randint(0, 50, (3000,), generator=g)
    acts = fd.ActivationSet.from_tensors({"base": x, "rl": x}, token_ids=token_ids, sequence_ids=torch.arange(3000) // 10)
    W_rl = torch.cat([q[:8], _unit(0.6 * q[6] + 0.8 * q[10]).unsqueeze(0)])
    saes = {"base": sae_from_dictionary(q[:10], k=4), "rl": sae_from_dictionary(W_rl, k=4)}
    replica = sae_from_dictionary(q[:11], k=4)
    cmp = fd.compare_dictionaries(saes, acts, replicas=[replica], progress=False, n_bootstrap=10)
    return cmp, saes, replica, acts


def test_recombined_cards_show_components_from_replicas(replica_setup, tmp_path):
    cmp, saes, replica, acts = replica_setup
    row = cmp.features.set_index("feature").loc[8]
    assert row["status"] == "recombined" and sorted(int(c) for c, _ in row["components"]) == [6, 10]
    assert cmp.meta["replica_components"] == {"10": [1, 10]}  # union id 10 is the replica's feature 10
    card = cmp.feature_card("rl", 8)
    got = sorted((r.checkpoint, r.feature, r.role) for r in card.related)
    assert got == [("base", 6, "component"), ("base replica 1", 10, "component")]
    comp = next(r for r in card.related if r.checkpoint == "base replica 1")
    assert comp.weight == pytest.approx(0.8, abs=0.05)
    rep_codes = encode(replica, acts["base"])[:, 10]  # its card: the replica's codes on the base's tokens
    assert comp.card.contexts[0].value == pytest.approx(float(rep_codes.max()), rel=1e-5)
    assert comp.card.frequency == pytest.approx(float((rep_codes > 0).float().mean()), abs=1e-6)
    # a loaded comparison keeps no replica SAE: the component is still listed, without its card
    loaded = fd.Comparison.load(cmp.to_dir(tmp_path / "c", figures=False))
    card = loaded.feature_card("rl", 8, dictionaries=saes, acts=acts)
    assert [(r.checkpoint, r.feature, r.card is None) for r in card.related if r.feature == 10] == [("base replica 1", 10, True)]
    # and in the export, the replica feature has a record of its own
    doc = json.loads(fd.export_features(cmp, tmp_path / "f.json").read_text())
    rep = [r for r in doc["features"] if r["kind"] == "replica"]
    assert [(r["checkpoint"], r["feature"]) for r in rep] == [("base replica 1", 10)]
    assert rep[0]["matched_by"][0]["feature"] == 8 and rep[0]["activations"]


def test_every_feature_is_reachable_in_the_report_by_id(setup, replica_setup, tmp_path):
    import re

    from featdiff.report.card_html import anchor
    from featdiff.report.html import write_html_report

    cmp = setup["cmp"]
    page = write_html_report(tmp_path / "r.html", cmp, cards=2).read_text()
    ids = set(re.findall(r'<details class="fd-index" id="([^"]+)"', page))
    live = cmp.features[~cmp.features["status"].astype(str).isin(["dead", "faint"])]
    want = {anchor("rl", f) for f in live["feature"]}
    ref_live = next(iter(cmp.alignments.values())).ref_live
    want |= {anchor("base", f) for f in range(18) if ref_live[f]}
    assert ids == want and len(ids) == len(re.findall(r'class="fd-index"', page))  # one card per id
    for target in re.findall(r'href="#([^"]+)"', page):  # every link lands on a card
        assert target in ids
    m = next(int(r["match"]) for _, r in live.iterrows() if str(r["status"]) == "reused")
    assert f'href="#{anchor("base", m)}"' in page
    assert "<script" not in page
    # the replica feature a recombination uses has its card in the index too
    page = write_html_report(tmp_path / "s.html", replica_setup[0], cards=2).read_text()
    assert f'id="{anchor("base replica 1", 10)}"' in page and f'href="#{anchor("base replica 1", 10)}"' in page
