"""Formats in and out: dictionary_learning, sparsify, sae-lens pretrained releases, save_saes, feature JSON."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import featdiff as fd
from featdiff.dictionaries.stats import encode
from featdiff.errors import FeatdiffError

D_IN, D_SAE = 6, 10


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_SAE, D_IN, generator=g),  # encoder.weight (d_sae, d_in)
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "W_dec": torch.randn(D_IN, D_SAE, generator=g),  # decoder.weight (d_in, d_sae)
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
    }


def _x(seed=1):
    return torch.randn(64, D_IN, generator=torch.Generator().manual_seed(seed))


def _topk(pre, k):
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals)


def _check(sae, codes_ref, recon_ref, x):
    codes = encode(sae, x)
    torch.testing.assert_close(codes, codes_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(codes).detach(), recon_ref, atol=1e-5, rtol=1e-5)
    assert (codes > 0).any()


def test_dictionary_learning_autoencoder(tmp_path):
    w = _weights()
    sd = {"encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "decoder.weight": w["W_dec"],
          "bias": w["b_dec"]}
    torch.save(sd, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    x = _x()
    codes = torch.relu((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"])  # AutoEncoder.encode
    recon = codes @ w["W_dec"].T + w["b_dec"]  # AutoEncoder.decode
    sae = fd.load_sae(tmp_path)
    assert type(sae).__name__ == "StandardSAE"
    _check(sae, codes, recon, x)


def test_dictionary_learning_batch_topk(tmp_path):
    w = _weights(2)
    k = 3
    sd = {"encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "decoder.weight": w["W_dec"],
          "b_dec": w["b_dec"], "k": torch.tensor(k), "threshold": torch.tensor(-1.0)}
    torch.save(sd, tmp_path / "ae.pt")
    x = _x(3)
    codes = _topk(torch.relu((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"]), k)
    recon = codes @ w["W_dec"].T + w["b_dec"]
    sae = fd.load_sae(tmp_path)
    assert sae.cfg.k == k
    _check(sae, codes, recon, x)
    assert int((encode(sae, x) > 0).sum(-1).max()) <= k


def test_dictionary_learning_batch_topk_with_learned_threshold(tmp_path):
    w = _weights(9)
    sd = {"encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "decoder.weight": w["W_dec"],
          "b_dec": w["b_dec"], "k": torch.tensor(3), "threshold": torch.tensor(0.8)}
    torch.save(sd, tmp_path / "ae.pt")
    x = _x(10)
    post = torch.relu((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"])
    codes = post * (post > 0.8)  # BatchTopKSAE.encode(x, use_threshold=True)
    sae = fd.load_sae(tmp_path)
    assert type(sae).__name__ == "JumpReLUSAE"
    _check(sae, codes, codes @ w["W_dec"].T + w["b_dec"], x)
    assert ((post > 0) & (post <= 0.8)).any()  # the threshold removes codes here


def test_sparsify_folder(tmp_path):
    from safetensors.torch import save_file

    w = _weights(4)
    k = 2
    folder = tmp_path / "layers.3"
    folder.mkdir()
    W_dec = w["W_dec"].T.contiguous()  # sparsify stores W_dec as (num_latents, d_in)
    save_file({"encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "W_dec": W_dec, "b_dec": w["b_dec"]},
              str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"d_in": D_IN, "num_latents": D_SAE, "k": k, "signed": False,
                                                 "expansion_factor": 2, "normalize_decoder": True}))
    x = _x(5)
    codes = _topk(torch.relu((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"]), k)
    recon = codes @ W_dec + w["b_dec"]
    sae = fd.load_sae(folder)
    _check(sae, codes, recon, x)


def test_sae_lens_folder_unchanged_and_bad_folder(tmp_path):
    sae = fd.sae_from_dictionary(torch.randn(D_SAE, D_IN), k=2)
    loaded = fd.load_sae(fd.save_sae(sae, tmp_path / "s"))
    x = _x(6)
    torch.testing.assert_close(encode(loaded, x), encode(sae, x))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatdiffError, match="cfg.json"):
        fd.load_sae(tmp_path / "empty")
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "empty" / "ae.pt")
    with pytest.raises(FeatdiffError, match="not an AutoEncoder"):
        fd.load_sae(tmp_path / "empty")


def test_pretrained_release_goes_through_sae_lens(monkeypatch):
    import sae_lens

    sae = fd.sae_from_dictionary(torch.eye(4), k=1)
    calls = []

    def fake(release, sae_id, device="cpu", **kw):
        calls.append((release, sae_id, device))
        return sae

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", staticmethod(fake))
    assert fd.load_sae("my-release/blocks.0.hook_resid_post") is sae
    assert fd.load_sae(release="r", sae_id="id") is sae
    assert calls == [("my-release", "blocks.0.hook_resid_post", "cpu"), ("r", "id", "cpu")]
    with pytest.raises(FeatdiffError, match="both release"):
        fd.load_sae(release="r")


def test_save_saes_one_folder_per_checkpoint_and_replica(tmp_path):
    a = fd.sae_from_dictionary(torch.randn(D_SAE, D_IN), k=2)
    b = [fd.sae_from_dictionary(torch.randn(D_SAE, D_IN), k=3) for _ in range(2)]
    out = fd.save_saes({"base": a, "sft": b}, tmp_path / "saes")
    assert sorted(out) == ["base", "sft/replica_0", "sft/replica_1"]
    torch.testing.assert_close(fd.load_sae(out["sft/replica_1"]).W_dec, b[1].W_dec)
    assert fd.load_sae(out["base"]).cfg.k == 2
    with pytest.raises(FeatdiffError):
        fd.save_saes({}, tmp_path / "x")


def test_export_features_json(tmp_path):
    feats = pd.DataFrame({"checkpoint": ["sft", "sft"], "feature": [0, 1], "status": ["reused", "novel"],
                          "reuse": [0.93, np.nan], "match": [4, -1]})
    path = fd.export_features(SimpleNamespace(features=feats), tmp_path / "f.json")
    doc = json.loads(path.read_text())
    assert doc["featdiff_feature_json"] == 3 and doc["cards"] is False  # no activations: the table only
    assert doc["features"][0] == {"checkpoint": "sft", "feature": 0, "status": "reused", "reuse": 0.93, "match": 4,
                                "kind": "target"}
    assert doc["features"][1]["reuse"] is None
    with pytest.raises(FeatdiffError, match="Comparison"):
        fd.export_features(object(), tmp_path / "g.json")


_HUB_SCRIPT = """
import sys, torch
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup, get_pretrained_saes_directory
import featdiff as fd
get_pretrained_saes_directory()["featdiff-test-release"] = PretrainedSAELookup(
    release="featdiff-test-release", repo_id="featdiff-org/tiny-saes", model="tiny", conversion_func=None,
    saes_map={"blocks.0.hook_resid_post": "layer_0"}, expected_var_explained={}, expected_l0={},
    neuronpedia_id={}, norm_scaling_factor={}, config_overrides=None)
sae = fd.load_sae("featdiff-test-release/blocks.0.hook_resid_post")
torch.save({"W_dec": sae.W_dec.detach(), "W_enc": sae.W_enc.detach(), "b_dec": sae.b_dec.detach()}, sys.argv[1])
"""


def test_pretrained_release_from_an_offline_hub_cache(tmp_path):
    """sae-lens's own registry and loader, the files found in a hub cache laid out as huggingface_hub writes it."""
    import os
    import subprocess
    import sys

    sae = fd.sae_from_dictionary(torch.randn(D_SAE, D_IN, generator=torch.Generator().manual_seed(7)), k=2)
    repo = tmp_path / "hf" / "hub" / "models--featdiff-org--tiny-saes"
    rev = "0123456789abcdef0123456789abcdef01234567"
    fd.save_sae(sae, repo / "snapshots" / rev / "layer_0")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = tmp_path / "loaded.pt"
    res = subprocess.run([sys.executable, "-c", _HUB_SCRIPT, str(out)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    got = torch.load(out)
    torch.testing.assert_close(got["W_dec"], sae.W_dec.detach())
    torch.testing.assert_close(got["W_enc"], sae.W_enc.detach())


def test_dictionary_learning_crosscoder(tmp_path):
    g = torch.Generator().manual_seed(8)
    W_enc, b_enc = torch.randn(2, D_IN, D_SAE, generator=g), torch.randn(D_SAE, generator=g) * 0.1
    W_dec, b_dec = torch.randn(2, D_SAE, D_IN, generator=g), torch.randn(2, D_IN, generator=g)
    torch.save({"encoder.weight": W_enc, "encoder.bias": b_enc, "decoder.weight": W_dec, "decoder.bias": b_dec},
               tmp_path / "ae.pt")
    x = torch.randn(32, 2, D_IN, generator=g)
    codes = torch.relu(torch.einsum("bld,lds->bs", x, W_enc) + b_enc)  # CrossCoder.encode
    recon = torch.einsum("bs,lsd->bld", codes, W_dec) + b_dec  # CrossCoder.decode
    cc = fd.load_crosscoder(tmp_path, names=["base", "sft"])
    assert cc.names == ["base", "sft"]
    torch.testing.assert_close(cc.encode(x).detach(), codes, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cc.decode(codes).detach(), recon, atol=1e-5, rtol=1e-5)
    with pytest.raises(FeatdiffError, match="2 models"):
        fd.load_crosscoder(tmp_path, names=["base"])
