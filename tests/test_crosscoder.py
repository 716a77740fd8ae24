"""Crosscoder: training on planted shared / specific atoms, attribution metrics, latent scaling, disk format."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import featdiff as fd
from featdiff import constants
from featdiff.activations.activations import ActivationSet
from featdiff.dictionaries.crosscoder.config import (
    CrosscoderConfig,
    default_crosscoder_k,
    default_crosscoder_lr,
)
from featdiff.dictionaries.crosscoder.model import Crosscoder, stack
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.dictionaries.health import loss_settling
from featdiff.dictionaries.stats import firing_frequency
from featdiff.errors import FeatdiffError, FeatdiffWarning
from featdiff.metrics.crosscoder import decoder_cosine, decoder_norms, latent_scaling, mas, nrn
from featdiff.synthetic.crosscoder import plant_shared_specific, planted_recovery

PLANT = dict(d_in=16, n_shared=12, n_specific={"rl": 4, "sft": 4, "base": 2}, k=3, n_tokens=4096)
TRAIN = dict(d_sae=64, k=3, batch_size=128, n_steps=400, lr=0.01, dead_steps_threshold=50)


@pytest.fixture(scope="module")
def planted():
    return plant_shared_specific(seed=0, rotation=0.1, noise=0.02, scales={"rl": 3.0, "sft": 0.5}, **PLANT)


@pytest.fixture(scope="module")
def trained(planted):
    acts, _ = planted
    return train_crosscoder(acts, seed=0, progress=False, **TRAIN)


_recovery = planted_recovery  # per category: best decoder row at cosine >= 0.9 with the right MAS category


def _hand_cc(w_dec: torch.Tensor, names=("base", "rl", "sft")) -> Crosscoder:
    m, s, d = w_dec.shape
    cc = Crosscoder(CrosscoderConfig(names=list(names)[:m], d_in=d, d_sae=s, k=1, normalise=False))
    with torch.no_grad():
        cc.W_dec.copy_(w_dec)
    return cc


# --------------------------------------------------------------------------- training on planted atoms
def test_recovers_planted_shared_and_specific_atoms(planted, trained):
    acts, truth = planted
    rec = _recovery(trained, truth)
    # Measured: 1.0 for every category (seeds 0-2, with and without rotation / noise / scales).
    assert set(rec) == {"shared", "base", "rl", "sft"}
    assert all(v >= 0.8 for v in rec.values()), rec
    ev = trained.evaluate(acts)
    assert list(ev.columns) == ["checkpoint", "fve", "mse", "l0", "dead_fraction"]
    assert ev["checkpoint"].tolist() == ["base", "rl", "sft"]
    assert (ev["fve"] > 0.95).all(), ev  # measured 0.996
    assert 1.5 < ev["l0"].iloc[0] < 6  # k = 3


def test_normalisation_scale_and_raw_units(planted, trained):
    acts, _ = planted
    x = stack({n: acts[n] for n in acts.names}, trained.names)
    normed = x * trained.norm_scale[None, :, None]
    torch.testing.assert_close(normed.pow(2).sum(-1).mean(0), torch.full((3,), 16.0), rtol=1e-4, atol=1e-3)
    # rl was planted 3x larger, sft 0.5x: the scales undo it
    assert trained.norm_scale[1] < trained.norm_scale[0] < trained.norm_scale[2]
    # decoder(name) is the raw-unit decoder: decode(f) = f @ decoder(m) + b_dec[m] / s_m
    f = trained.encode(x[:32])
    out = trained.decode(f)
    for i, name in enumerate(trained.names):
        expected = f @ trained.decoder(name) + trained.b_dec[i] / trained.norm_scale[i]
        torch.testing.assert_close(out[:, i], expected, rtol=1e-4, atol=1e-5)


def test_batchtopk_threshold_inference_is_batch_independent(planted, trained):
    acts, _ = planted
    x = stack({n: acts[n][:200] for n in acts.names}, trained.names)
    assert float(trained.threshold) > 0
    full = trained.encode(x)
    for rows in (slice(0, 7), slice(150, 151), slice(13, 113)):
        part = trained.encode(x[rows])
        assert torch.equal(part != 0, full[rows] != 0)  # the same features fire, whatever the batch
        torch.testing.assert_close(part, full[rows])  # (values up to matmul rounding)
    codes = trained.encode_acts(acts)
    assert codes.shape == (acts.n_tokens, 64)
    assert torch.equal(codes[:200], full)
    # the training-time rule keeps exactly k * batch codes
    assert int((trained.encode(x, use_threshold=False) != 0).sum()) <= 3 * 200


def test_trained_specific_features_pass_latent_scaling(planted, trained):
    acts, _ = planted
    ls = fd.latent_scaling(trained, acts, tuned="rl", base="base")
    active = ls[ls["n_active"] > 0]
    assert len(active) >= 4  # the 4 planted rl atoms
    # Genuinely rl-only atoms: the base neither leaves them in its error nor reconstructs them.
    assert (active["nu_error"].abs() < 0.2).mean() >= 0.75, active
    assert (~active["sparsity_artefact"]).mean() >= 0.75


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_recovery_other_seeds(seed):
    acts, truth = plant_shared_specific(seed=seed, rotation=0.1, **PLANT)
    cc = train_crosscoder(acts, seed=seed, progress=False, **TRAIN)
    rec = _recovery(cc, truth)
    assert all(v >= 0.8 for v in rec.values()), rec  # measured 1.0


def test_same_seed_same_weights_other_seed_differs():
    acts, _ = plant_shared_specific(d_in=8, n_shared=4, n_specific={"rl": 2}, n_tokens=512, seed=3)
    kw = dict(d_sae=16, k=2, n_steps=30, batch_size=64, progress=False)
    a, b = train_crosscoder(acts, seed=1, **kw), train_crosscoder(acts, seed=1, **kw)
    c = train_crosscoder(acts, seed=2, **kw)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.W_dec, c.W_dec)


def test_l1_sparsity_trains_and_reduces_loss():
    acts, truth = plant_shared_specific(seed=1, **PLANT)
    kw = dict(sparsity="l1", d_sae=64, batch_size=128, lr=0.01, seed=0, progress=False)
    before = train_crosscoder(acts, n_steps=1, **kw).evaluate(acts)
    after = train_crosscoder(acts, n_steps=300, **kw)
    ev = after.evaluate(acts)
    assert (ev["mse"] < 0.2 * before["mse"]).all(), (before, ev)
    assert ev["l0"].iloc[0] < 20  # sparse: 64 features, about 3 atoms per token
    assert float(after.threshold) < 0  # no threshold for l1
    assert _recovery(after, truth)["rl"] >= 0.5  # measured 1.0


def test_config_round_trip_overrides_and_unknown_keys():
    cfg = CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=32, k=4, hook="blocks.0.hook_resid_post")
    assert CrosscoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(FeatdiffError, match="Unknown CrosscoderConfig keys"):
        CrosscoderConfig.from_dict({**cfg.to_dict(), "l1_coeff": 1.0})
    acts = ActivationSet.from_tensors({"rl": torch.randn(64, 8), "base": torch.randn(64, 8)})
    cc = train_crosscoder(acts, config=cfg, n_steps=3, batch_size=32, progress=False)
    assert cc.names == ["base", "rl"] and cc.d_sae == 32 and cc.cfg.n_steps == 3  # config order wins


# --------------------------------------------------------------------------- hand-built attribution
def test_decoder_norms_nrn_mas_match_hand_values():
    # feature 0: base (3,4) rl (0,0) sft (0,0) -> base-only; 1: all equal; 2: rl (1,1), sft (2,0)
    w = torch.zeros(3, 3, 2)
    w[0, 0] = torch.tensor([3.0, 4.0])
    w[:, 1] = torch.tensor([1.0, 0.0])
    w[1, 2] = torch.tensor([1.0, 1.0])
    w[2, 2] = torch.tensor([2.0, 0.0])
    cc = _hand_cc(w)
    n2 = decoder_norms(cc)
    assert list(n2.columns) == ["base", "rl", "sft"] and n2.index.name == "feature"
    np.testing.assert_allclose(n2.to_numpy(), [[5, 0, 0], [1, 1, 1], [0, 2**0.5, 2]], rtol=1e-6)
    n1 = cc.decoder_norms(p=1)
    np.testing.assert_allclose(n1.to_numpy(), [[7, 0, 0], [1, 1, 1], [0, 2, 2]], rtol=1e-6)

    r = fd.nrn(cc, "rl")
    assert r.name == "nrn" and r.index.name == "feature"
    np.testing.assert_allclose(r.to_numpy(), [0.0, 0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(nrn(cc, tuned="sft", base="rl", p=2).to_numpy()[2], 2 / (2 + 2**0.5))

    m2 = fd.mas(cc)
    assert list(m2.columns) == ["base", "rl", "sft", "dominant", "category"]
    np.testing.assert_allclose(m2[["base", "rl", "sft"]].sum(1), 1.0)
    np.testing.assert_allclose(
        m2.loc[2, ["rl", "sft"]].astype(float), [2**0.5 / (2 + 2**0.5), 2 / (2 + 2**0.5)]
    )
    assert m2["dominant"].tolist() == ["base", "base", "sft"]
    assert m2["category"].tolist() == ["base", "shared", "sft"]  # sft MAS 0.586 > 0.5
    m1 = mas(cc, p=1)  # with p = 1, feature 2 is an exact rl / sft tie: shared
    np.testing.assert_allclose(m1.loc[2, ["rl", "sft"]].astype(float), [0.5, 0.5])
    assert m1["category"].tolist() == ["base", "shared", "shared"]
    assert mas(cc, threshold=0.6)["category"].tolist() == ["base", "shared", "shared"]


def test_decoder_cosine_and_dead_features():
    w = torch.zeros(2, 2, 2)
    w[0, 0] = torch.tensor([1.0, 0.0])
    w[1, 0] = torch.tensor([1.0, 1.0])
    w[:, 1] = torch.tensor([0.0, 2.0])
    cc = _hand_cc(w, names=("base", "rl"))
    cos = decoder_cosine(cc, "base", "rl")
    np.testing.assert_allclose(cos.to_numpy(), [2**-0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(fd.decoder_cosine(cc, "rl", "base").to_numpy(), cos.to_numpy())
    with torch.no_grad():  # feature 0 reads base's first unit, feature 1 reads nothing: dead
        cc.W_enc.zero_()
        cc.W_enc[0, 0, 0] = 1.0
    x = torch.rand(20, 2)
    acts = {"base": x, "rl": x}
    assert firing_frequency(cc, acts).tolist() == [1.0, 0.0]
    m = mas(cc, acts=acts)
    assert m["dead"].tolist() == [False, True] and m.loc[1, "category"] == "dead"
    assert np.isnan(nrn(cc, "rl", acts=acts).loc[1]) and not np.isnan(nrn(cc, "rl").loc[1])


def test_latent_scaling_flags_artefacts_not_genuine_features():
    """Hand-built 2-model crosscoder on data with a shared atom e0, an rl-only atom e1, a shared atom e2.

    feature 0: reads e1 from rl, decodes e1 in rl only (genuinely rl-specific);
    feature 1: reads e0 from rl, decodes e0 in rl only though base has e0 too (Complete Shrinkage);
    feature 2: reads e2 from rl, decodes it in rl only, while feature 3 decodes e2 in base only, firing on
    the same tokens (Latent Decoupling). Every beta is then exactly 0 or 1.
    """
    g = torch.Generator().manual_seed(0)
    n = 200
    codes = torch.rand(n, 3, generator=g) * (torch.rand(n, 3, generator=g) < 0.5)
    e = torch.eye(4)
    base = codes[:, 0:1] * e[0] + codes[:, 2:3] * e[2]
    rl = base + codes[:, 1:2] * e[1]
    cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=4, d_sae=4, k=1, normalise=False))
    with torch.no_grad():
        for p in (cc.W_enc, cc.W_dec, cc.b_dec, cc.b_enc):
            p.zero_()
        for feat, (model, atom) in enumerate([(1, 1), (1, 0), (1, 2), (0, 2)]):
            cc.W_enc[model, atom, feat] = 1.0
            cc.W_dec[model, feat, atom] = 1.0
    acts = ActivationSet.from_tensors({"base": base, "rl": rl})
    assert fd.mas(cc)["category"].tolist() == ["rl", "rl", "rl", "base"]

    ls = latent_scaling(cc, acts, tuned="rl", base="base")  # default features: MAS category rl
    assert list(ls.columns) == [
        "feature",
        "n_active",
        "beta_error_base",
        "beta_error_tuned",
        "beta_reconstruction_base",
        "beta_reconstruction_tuned",
        "nu_error",
        "nu_reconstruction",
        "sparsity_artefact",
    ]
    assert ls["feature"].tolist() == [0, 1, 2]
    expected = {
        "beta_error_base": [0, 1, 0],
        "beta_error_tuned": [1, 1, 1],
        "beta_reconstruction_base": [0, 0, 1],
        "beta_reconstruction_tuned": [1, 1, 1],
        "nu_error": [0, 1, 0],
        "nu_reconstruction": [0, 0, 1],
    }
    for col, values in expected.items():
        np.testing.assert_allclose(ls[col].to_numpy(), values, atol=1e-6, err_msg=col)
    assert ls["sparsity_artefact"].tolist() == [False, True, True]
    assert ls["n_active"].tolist() == [int((codes[:, i] > 0).sum()) for i in (1, 0, 2)]
    # thresholds are parameters; a feature that never fires gets NaN and no flag
    assert latent_scaling(cc, acts, features=[1], error_threshold=1.5)["sparsity_artefact"].tolist() == [
        False
    ]
    dead = latent_scaling(cc, {"base": base * 0, "rl": rl * 0 + 1e-3 * e[3]}, features=[0])
    assert np.isnan(dead["nu_error"].iloc[0]) and not dead["sparsity_artefact"].iloc[0]


# --------------------------------------------------------------------------- disk
def test_save_load_round_trip(tmp_path, planted, trained):
    acts, _ = planted
    path = trained.save(tmp_path / "cc")
    cfg = json.loads((path / constants.CROSSCODER_CFG).read_text())
    assert cfg["names"] == ["base", "rl", "sft"] and cfg["hook"] == acts.hook
    assert cfg["format_version"] == constants.FORMAT_VERSION and "featdiff_version" in cfg
    back = Crosscoder.load(path)
    assert back.cfg == trained.cfg
    sd, sd2 = trained.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert torch.equal(back.encode_acts(acts), trained.encode_acts(acts))
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind


def test_load_missing_or_corrupted_raises(tmp_path):
    with pytest.raises(FeatdiffError, match="not a crosscoder folder"):
        Crosscoder.load(tmp_path / "nowhere")
    cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=4, d_sae=8, k=2))
    path = cc.save(tmp_path / "cc")
    weights = path / constants.CROSSCODER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(FeatdiffError, match="corrupted"):
        Crosscoder.load(path)
    path = cc.save(tmp_path / "cc2")
    (path / constants.CROSSCODER_CFG).write_text("{not json")
    with pytest.raises(FeatdiffError, match="corrupted"):
        Crosscoder.load(path)
    path = cc.save(tmp_path / "cc3")
    cfg = json.loads((path / constants.CROSSCODER_CFG).read_text())
    (path / constants.CROSSCODER_CFG).write_text(json.dumps({**cfg, "d_sae": 16}))
    with pytest.raises(FeatdiffError, match="implies"):
        Crosscoder.load(path)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_featdiff_error():
    x = torch.randn(32, 4)
    with pytest.raises(FeatdiffError, match="at least 2 checkpoints"):
        train_crosscoder(ActivationSet.from_tensors({"base": x}), progress=False)
    two = ActivationSet.from_tensors({"base": x, "rl": x})
    with pytest.raises(FeatdiffError, match=r"'sparsity'.*\['batchtopk', 'l1'\]; got 'topk'"):
        train_crosscoder(two, sparsity="topk", progress=False)
    with pytest.raises(FeatdiffError, match="Unknown CrosscoderConfig keys"):
        train_crosscoder(two, learning_rate=1e-3, progress=False)
    with pytest.raises(FeatdiffError, match="k \\(40\\) must be at most d_sae"):
        train_crosscoder(two, d_sae=8, k=40, progress=False)
    with pytest.raises(FeatdiffError, match="ActivationSet"):
        train_crosscoder({"base": x, "rl": x}, progress=False)
    cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=4, d_sae=8, k=2))
    with pytest.raises(FeatdiffError, match=r"'tuned'.*\['base', 'rl'\]; got 'sft'"):
        fd.nrn(cc, "sft")
    with pytest.raises(FeatdiffError, match="'p'"):
        cc.decoder_norms(p=3)
    with pytest.raises(FeatdiffError, match="shape"):
        cc.encode(torch.randn(5, 3, 4))
    with pytest.raises(FeatdiffError, match="lack checkpoints"):
        cc.encode_acts({"base": x, "sft": x})
    with pytest.raises(FeatdiffError, match="needs 'tuned'"):
        latent_scaling(
            Crosscoder(CrosscoderConfig(names=["base", "rl", "sft"], d_in=4, d_sae=8, k=2)),
            {"base": x, "rl": x, "sft": x},
        )
    with pytest.raises(FeatdiffError, match="lacks checkpoints"):
        stack({"base": x}, ["base", "rl"])


def test_planted_data_pairs_shared_codes():
    acts, truth = plant_shared_specific(
        names=("base", "rl"), d_in=8, n_shared=3, n_specific={"rl": 2}, n_tokens=300, seed=5
    )
    assert list(truth.columns) == ["atom", "category", "frequency"]
    dirs = truth.attrs["directions"]
    assert torch.equal(dirs["base"][3:], torch.zeros(2, 8))  # rl atoms absent from base
    # without rotation, rl - base is spanned by the rl-specific atoms alone
    diff = acts["rl"] - acts["base"]
    q, _ = torch.linalg.qr(dirs["rl"][3:].T)
    torch.testing.assert_close(diff - diff @ q @ q.T, torch.zeros_like(diff), atol=1e-5, rtol=0)
    again, _ = plant_shared_specific(
        names=("base", "rl"), d_in=8, n_shared=3, n_specific={"rl": 2}, n_tokens=300, seed=5
    )
    assert torch.equal(again["rl"], acts["rl"])


def test_explicit_arguments_override_a_config():
    from featdiff.activations.activations import ActivationSet
    from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
    from featdiff.dictionaries.crosscoder.train import train_crosscoder

    acts = ActivationSet.from_tensors({"base": torch.randn(256, 8), "rl": torch.randn(256, 8)})
    cfg = CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=16, k=2, n_steps=3, batch_size=64)
    cc = train_crosscoder(acts, config=cfg, d_sae=24, k=3, seed=5, progress=False)
    assert (cc.d_sae, cc.cfg.k, cc.cfg.seed) == (24, 3, 5)
    with pytest.raises(FeatdiffError, match="at least 2 tokens"):
        train_crosscoder(acts.subset(slice(0, 1)), progress=False)


def test_device_argument():
    from featdiff.activations.activations import ActivationSet
    from featdiff.dictionaries.crosscoder.train import train_crosscoder

    acts = ActivationSet.from_tensors({"base": torch.randn(256, 8), "rl": torch.randn(256, 8)})
    a = train_crosscoder(acts, d_sae=16, k=2, n_steps=5, batch_size=64, progress=False)
    b = train_crosscoder(acts, d_sae=16, k=2, n_steps=5, batch_size=64, progress=False, device="cpu")
    assert torch.equal(a.W_dec, b.W_dec) and b.W_dec.device.type == "cpu"
    with pytest.raises(FeatdiffError, match="bad device"):
        train_crosscoder(acts, progress=False, device="gpu0")


# --------------------------------------------------------------------------- defaults and diagnostics
SMALL = dict(d_in=8, n_shared=8, n_specific={"base": 2, "rl": 2, "sft": 2}, k=2, n_tokens=4096, noise=0.02)


def _train_recording(acts, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cc = train_crosscoder(acts, progress=False, **kw)
    return cc, [w for w in caught if issubclass(w.category, FeatdiffWarning)]


def test_default_k_and_run_length_in_samples():
    assert [default_crosscoder_k(d, 8 * d) for d in (8, 16, 32, 64, 128, 512)] == [3, 3, 4, 8, 16, 64]
    assert default_crosscoder_k(8, 8) == 2  # never more than a quarter of the latents
    cfg = CrosscoderConfig(names=["base", "rl"], d_in=64, d_sae=256)
    assert cfg.k == 8 and CrosscoderConfig.from_dict(cfg.to_dict()) == cfg
    assert [default_crosscoder_lr(d) for d in (16, 40, 64, 128)] == [1e-2, 1e-2, 0.00625, 0.003125]
    assert cfg.lr == 0.00625 and CrosscoderConfig(names=["a", "b"], d_in=64, d_sae=256, lr=1e-3).lr == 1e-3
    # run length: n_steps wins, then n_epochs (the old parameter), then n_samples (default 500k rows)
    assert cfg.n_steps_for(100_000) == 1954  # ceil(500_000 / 256)
    assert CrosscoderConfig(names=["a", "b"], d_in=8, d_sae=16, n_samples=1000).n_steps_for(10_000) == 4
    assert CrosscoderConfig(names=["a", "b"], d_in=8, d_sae=16, n_epochs=2.0).n_steps_for(1000) == 6
    assert (
        CrosscoderConfig(names=["a", "b"], d_in=8, d_sae=16, n_epochs=2.0, n_steps=7).n_steps_for(1000) == 7
    )
    with pytest.raises(FeatdiffError, match="run length"):
        CrosscoderConfig(names=["a", "b"], d_in=8, d_sae=16, n_samples=None)
    acts = ActivationSet.from_tensors({"base": torch.randn(600, 8), "rl": torch.randn(600, 8)})
    cc, _ = _train_recording(acts, d_sae=16, n_epochs=1.0, batch_size=128)
    assert cc.diagnostics["n_steps"] == 4 and cc.cfg.k == 3  # 600 // 128 full batches; k from the rule
    cc, _ = _train_recording(acts, d_sae=16, n_samples=640, batch_size=128)
    assert cc.diagnostics["n_steps"] == 5 and cc.diagnostics["n_samples"] == 640


def test_loss_settling_measures_the_tail():
    assert loss_settling(torch.ones(200)) == 0.0
    falling = torch.linspace(2.0, 1.0, 200)  # tail window 40 steps (20 %): means 1.1482 vs 1.0477
    assert loss_settling(falling) == pytest.approx((1.1482 - 1.0477) / 1.1482, abs=2e-3)
    a, b = falling[80:90].mean(), falling[90:100].mean()  # end=100: a 20-step window before step 100
    assert loss_settling(falling, end=100) == pytest.approx(float((a - b) / a), rel=1e-4)
    assert np.isnan(loss_settling(torch.ones(9)))


def test_diagnostics_warn_on_a_short_wide_run():
    acts, _ = plant_shared_specific(seed=0, **SMALL)
    cc, caught = _train_recording(acts, d_sae=512, n_steps=40, batch_size=128, seed=0)
    dg = cc.diagnostics
    assert set(dg) == {
        "n_steps",
        "n_samples",
        "final_loss",
        "loss_settling",
        "loss_settled",
        "dead_fraction",
        "n_dead",
        "n_eval_tokens",
    }
    assert dg["n_steps"] == 40 and not dg["loss_settled"] and dg["loss_settling"] > 0.05
    assert dg["dead_fraction"] > 0.5 and dg["n_dead"] == round(dg["dead_fraction"] * 512)
    assert dg["dead_fraction"] == pytest.approx(float(cc.evaluate(acts)["dead_fraction"][0]))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "had not settled" in messages[0] and "n_samples" in messages[0]
    assert "dead" in messages[1] and "Lower d_sae" in messages[1]


def test_diagnostics_silent_on_a_good_run():
    acts, truth = plant_shared_specific(seed=0, **SMALL)  # 14 atoms
    cc, caught = _train_recording(acts, d_sae=24, k=2, n_steps=1500, batch_size=128, seed=0)
    assert caught == [], [str(w.message) for w in caught]
    dg = cc.diagnostics
    assert dg["loss_settled"] and abs(dg["loss_settling"]) <= 0.02 and dg["dead_fraction"] <= 0.5
    assert min(planted_recovery(cc, truth).values()) >= 0.75


@pytest.mark.slow
def test_defaults_recover_planted_atoms():
    """train_crosscoder with nothing but its defaults (d_sae 8 * d_in, k from the rule, 500k samples, lr
    1e-2) on benchmarks/bench_crosscoder_defaults.py's planted data at d_in 16 (16 shared atoms, 2 per
    checkpoint, 3 active per token). Measured: every category 1.00 (docs/crosscoder.md)."""
    acts, truth = plant_shared_specific(
        d_in=16,
        n_shared=16,
        n_specific={"base": 2, "rl": 2, "sft": 2},
        k=3.0,
        n_tokens=16384,
        rotation=0.1,
        noise=0.02,
        seed=0,
    )
    cc, _ = _train_recording(acts, seed=0)
    assert (cc.cfg.k, cc.d_sae, cc.diagnostics["n_steps"]) == (3, 128, 1954)
    rec = planted_recovery(cc, truth)
    assert set(rec) == {"shared", "base", "rl", "sft"}
    assert min(rec.values()) >= 0.9, rec
    assert cc.diagnostics["loss_settled"]
