"""train_saes / save_sae / load_sae / sae_from_dictionary and the SAE helpers (featdiff.dictionaries.sae)."""

from __future__ import annotations

import json

import pytest
import torch

from featdiff.activations.activations import ActivationSet
from featdiff.dictionaries.formats import load_sae, save_sae
from featdiff.dictionaries.sae import (
    ARCHITECTURES,
    SAETrainConfig,
    default_k,
    sae_from_dictionary,
    train_saes,
)
from featdiff.dictionaries.stats import encode, explained_variance, firing_frequency, l0, unit_decoder
from featdiff.errors import FeatdiffError


def planted_acts(d_in=16, n_atoms=64, k=2, n_tokens=4000, seed=0, names=("base", "rl")):
    """Unit atoms, sparse non-negative codes (about k active, magnitudes in [0.5, 1.5]), x = codes @ A."""
    g = torch.Generator().manual_seed(seed)
    atoms = {}
    for name in names:
        A = torch.randn(n_atoms, d_in, generator=g)
        atoms[name] = A / A.norm(dim=1, keepdim=True)
    active = torch.rand(n_tokens, n_atoms, generator=g) < k / n_atoms
    codes = active * (0.5 + torch.rand(n_tokens, n_atoms, generator=g))
    acts = {n: codes @ A + 0.01 * torch.randn(n_tokens, d_in, generator=g) for n, A in atoms.items()}
    return ActivationSet.from_tensors(acts), atoms


def recovery(atoms, sae, threshold=0.9) -> float:
    """Fraction of planted atoms whose best-matching decoder row has cosine > threshold."""
    return float(((atoms @ unit_decoder(sae).T).max(dim=1).values > threshold).float().mean())


FAST = {"n_steps": 60, "batch_size": 256}


@pytest.fixture(scope="module")
def small():
    return planted_acts(n_tokens=2000)


# ---- training ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_saes_defaults_recover_planted_atoms():
    # library defaults except the run length (d_sae = 4 * d_in = n_atoms, k = default_k(32) = 4);
    # measured: recovery 0.91 / 0.93, FVE 0.80 (about 5-10 s)
    acts, atoms = planted_acts(d_in=32, n_atoms=128, k=4, n_tokens=20_000)
    saes = train_saes(acts, n_samples=400_000, progress=False)
    for name in acts.names:
        assert saes[name].cfg.d_sae == 128 and saes[name].cfg.k == default_k(32) == 4
        assert recovery(atoms[name], saes[name]) >= 0.85, name
        assert explained_variance(saes[name], acts[name]) > 0.7


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_trains_to_finite_fve(small, architecture):
    acts, _ = small
    saes = train_saes(acts, architecture=architecture, n_steps=150, batch_size=256, progress=False)
    for name, sae in saes.items():
        fve = explained_variance(sae, acts[name])
        assert torch.isfinite(torch.tensor(fve)) and fve > 0.3, (architecture, name, fve)
        assert not sae.training
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(sae.cfg.d_sae), atol=1e-4)
        expected = "jumprelu" if architecture == "batchtopk" else architecture
        assert sae.cfg.architecture() == expected


def test_one_pass_with_extra_is_seeded_and_independent(small):
    acts, _ = small
    extra = {"base_seed1": ("base", 1)}
    a = train_saes(acts, seed=0, extra=extra, progress=False, **FAST)
    b = train_saes(acts, seed=0, extra=extra, progress=False, **FAST)
    assert sorted(a) == ["base", "base_seed1", "rl"]
    for key in a:
        sa, sb = a[key].state_dict(), b[key].state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[p], sb[p]) for p in sa)
    assert not torch.equal(a["base"].W_dec, a["base_seed1"].W_dec)
    # an SAE does not depend on which others share the pass
    alone = train_saes(acts, seed=0, names=["base"], progress=False, **FAST)
    assert list(alone) == ["base"]  # the batched default: batched products of 1 or 3 SAEs sum in another order
    assert torch.allclose(alone["base"].W_dec, a["base"].W_dec, rtol=0, atol=1e-6)
    ref = {"progress": False, "engine": "sae-lens", **FAST}  # bit for bit with the sae-lens engine
    alone, a2 = train_saes(acts, seed=0, names=["base"], **ref), train_saes(acts, seed=0, extra=extra, **ref)
    assert torch.equal(alone["base"].W_dec, a2["base"].W_dec)
    # a replica (checkpoint, seed) equal to a main SAE is that SAE
    same = train_saes(acts, seed=0, names=["base"], extra={"again": ("base", 0)}, progress=False, **FAST)
    assert torch.allclose(same["again"].W_enc, same["base"].W_enc, rtol=0, atol=1e-6)
    other = train_saes(acts, seed=1, names=["base"], progress=False, **FAST)
    assert not torch.equal(other["base"].W_dec, a["base"].W_dec)


def test_loss_history_is_the_reconstruction_loss_training_sees(small, capsys):
    acts, _ = small
    steps = 150  # past dead_feature_window=100, so the AuxK loss switches on
    saes = train_saes(acts, k=2, n_steps=steps, batch_size=256, dead_feature_window=100, progress=True)
    bar = capsys.readouterr().err
    for name, sae in saes.items():
        hist = sae.featdiff_train
        assert hist["n_steps"] == steps and len(hist["losses"]) == len(hist["aux_losses"]) == steps
        losses = torch.tensor(hist["losses"])
        assert losses[-10:].mean() < 0.5 * losses[:10].mean()
        assert all(a == 0 for a in hist["aux_losses"][:100])  # no latent can be dead before the window
        # the last recorded reconstruction loss is the final SAE's: sum of squared errors per row, in the
        # normalised units sae-lens trains in (inputs scaled to mean norm sqrt(d_in))
        x = acts[name]
        scale = x.shape[1] ** 0.5 / x.norm(dim=1).mean()
        with torch.no_grad():
            err = ((sae.decode(sae.encode(x)) - x) ** 2).sum(dim=1).mean() * scale**2
        assert float(losses[-10:].mean()) == pytest.approx(float(err), rel=0.25), name
    # the bar shows the smoothed reconstruction loss (EMA, weight 0.05) averaged over the SAEs, not one raw step
    ema = []
    for sae in saes.values():
        e = sae.featdiff_train["losses"][0]
        for v in sae.featdiff_train["losses"][1:]:
            e = 0.95 * e + 0.05 * v
        ema.append(e)
    shown = float(bar.rsplit("mse=", 1)[1].split(",")[0].split("]")[0])
    assert shown == pytest.approx(sum(ema) / len(ema), rel=1e-3)
    assert "aux=" in bar and "dead=" in bar


def test_config_and_overrides(small):
    acts, _ = small
    cfg = SAETrainConfig(d_sae=32, k=3, n_steps=5, batch_size=128, normalize_activations=False)
    saes = train_saes(acts, config=cfg, names=["rl"], progress=False)
    assert (saes["rl"].cfg.d_sae, saes["rl"].cfg.k) == (32, 3)
    saes = train_saes(acts, config=cfg.to_dict(), d_sae=48, names=["rl"], progress=False)  # argument wins
    assert saes["rl"].cfg.d_sae == 48
    assert saes["rl"].cfg.metadata.model_name == "rl"


def test_progress_false_is_silent(small, capsys):
    acts, _ = small
    train_saes(acts, n_steps=3, batch_size=64, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_bad_input_raises(small):
    acts, _ = small
    with pytest.raises(
        FeatdiffError, match=r"'architecture'.*\['topk', 'batchtopk', 'jumprelu', 'standard'\].*'gated'"
    ):
        train_saes(acts, architecture="gated", progress=False)
    with pytest.raises(FeatdiffError, match="Unknown train_saes options.*'lrr'"):
        train_saes(acts, lrr=1.0, progress=False)
    with pytest.raises(FeatdiffError, match="no checkpoint named 'sft'"):
        train_saes(acts, names=["sft"], progress=False)
    with pytest.raises(FeatdiffError, match="extra"):
        train_saes(acts, extra={"x": ("sft", 1)}, progress=False)
    with pytest.raises(FeatdiffError, match="clashes"):
        train_saes(acts, extra={"rl": ("base", 1)}, progress=False)
    with pytest.raises(FeatdiffError, match="cannot exceed d_sae"):
        train_saes(acts, k=100, d_sae=32, progress=False)
    with pytest.raises(FeatdiffError, match="ActivationSet"):
        train_saes(acts["base"], progress=False)


def test_config_validation_and_from_dict():
    cfg = SAETrainConfig(architecture="jumprelu", lr=1e-3, n_epochs=2.0)
    assert SAETrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_steps_for(2048) == 2 * 2048 // cfg.batch_size
    with pytest.raises(
        FeatdiffError, match=r"Unknown SAETrainConfig keys \['nope'\]; allowed keys are \[.*'lr'"
    ):
        SAETrainConfig.from_dict({"lr": 1e-3, "nope": 1})
    with pytest.raises(FeatdiffError, match="architecture"):
        SAETrainConfig(architecture="relu")
    for bad in (
        {"lr": -1.0},
        {"batch_size": 0},
        {"k": 2.5},
        {"lr_decay_fraction": 1.0},
        {"d_sae": 0},
        {"n_samples": None},
        {"l1_coefficient": -1.0},
    ):
        with pytest.raises(FeatdiffError):
            SAETrainConfig(**bad)


# ---- save / load ---------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_save_load_round_trip(small, tmp_path, architecture):
    acts, _ = small
    sae = train_saes(acts, architecture=architecture, names=["rl"], progress=False, **FAST)["rl"]
    path = save_sae(sae, tmp_path / "rl")
    assert sorted(p.name for p in path.iterdir()) == [".featdiff", "cfg.json", "sae_weights.safetensors"]
    loaded = load_sae(path)
    s0, s1 = sae.state_dict(), loaded.state_dict()
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
    assert type(loaded) is type(sae) and not loaded.training
    assert torch.equal(encode(loaded, acts["rl"]), encode(sae, acts["rl"]))
    save_sae(sae, path)  # overwriting an existing folder works and leaves no temporary folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl"]


def test_load_sae_errors(tmp_path):
    sae = sae_from_dictionary(torch.eye(4), k=1)
    with pytest.raises(FeatdiffError, match="No SAE folder"):
        load_sae(tmp_path / "missing")
    path = save_sae(sae, tmp_path / "a")
    (path / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FeatdiffError, match="sae_weights.safetensors is corrupted"):
        load_sae(path)
    (path / "sae_weights.safetensors").unlink()
    with pytest.raises(FeatdiffError, match="sae_weights.safetensors is missing"):
        load_sae(path)
    path = save_sae(sae, tmp_path / "b")
    (path / "cfg.json").write_text("{not json")
    with pytest.raises(FeatdiffError, match="cfg.json is not a valid sae-lens config"):
        load_sae(path)
    (path / "cfg.json").unlink()
    with pytest.raises(FeatdiffError, match="cfg.json is missing"):
        load_sae(path)
    path = save_sae(sae, tmp_path / "c")  # weights that do not match the config
    cfg = json.loads((path / "cfg.json").read_text())
    (path / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 8}))
    with pytest.raises(FeatdiffError, match="does not match cfg.json"):
        load_sae(path)


# ---- dictionaries and helpers --------------------------------------------------------------------


def test_sae_from_dictionary_encodes_planted_atoms():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(32, 64, generator=g)
    A = A / A.norm(dim=1, keepdim=True)
    idx = torch.randint(0, 32, (500,), generator=g)
    mags = 0.5 + torch.rand(500, generator=g)
    x = mags[:, None] * A[idx]  # one atom per token
    sae = sae_from_dictionary(A, k=1)
    codes = encode(sae, x)
    assert codes.shape == (500, 32)
    assert torch.equal(codes.argmax(dim=1), idx)
    assert torch.allclose(codes.max(dim=1).values, mags, atol=1e-5)
    assert explained_variance(sae, x) == pytest.approx(1.0, abs=1e-6)
    assert l0(sae, x) == 1.0
    freq = firing_frequency(sae, x)
    assert torch.allclose(freq, torch.bincount(idx, minlength=32).float() / 500)
    assert torch.allclose(unit_decoder(sae), A, atol=1e-6)
    for arch in ("standard", "jumprelu"):
        other = sae_from_dictionary(A, architecture=arch)
        assert other.cfg.architecture() == arch and torch.allclose(other.W_enc, A.T)
    with pytest.raises(FeatdiffError, match="'architecture'"):
        sae_from_dictionary(A, architecture="gated")
    with pytest.raises(FeatdiffError, match="W_enc must be"):
        sae_from_dictionary(A, W_enc=torch.zeros(3, 3))


def test_explained_variance_matches_direct_formula(small):
    acts, atoms = small
    sae = sae_from_dictionary(atoms["base"], k=2)
    x = acts["base"]
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    direct = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert explained_variance(sae, x, batch_size=300) == pytest.approx(float(direct), abs=1e-5)
    assert l0(sae, x, batch_size=300) <= 2
    assert firing_frequency(sae, x, batch_size=300).shape == (64,)
    with pytest.raises(FeatdiffError, match="d_in=16"):
        encode(sae, torch.zeros(3, 5))


def test_too_few_tokens_raise():
    from featdiff.activations.activations import ActivationSet

    acts = ActivationSet.from_tensors({"base": torch.randn(1, 8)})
    with pytest.raises(FeatdiffError, match="at least 2 tokens"):
        train_saes(acts, progress=False)


def test_device_argument():
    from featdiff.activations.activations import ActivationSet

    acts = ActivationSet.from_tensors({"base": torch.randn(256, 8)})
    a = train_saes(acts, k=2, n_steps=5, batch_size=64, progress=False)
    b = train_saes(acts, k=2, n_steps=5, batch_size=64, progress=False, device="cpu")
    assert torch.equal(a["base"].W_dec, b["base"].W_dec)
    assert b["base"].W_dec.device.type == "cpu"
    with pytest.raises(FeatdiffError, match="bad device 'gpu0'"):
        train_saes(acts, progress=False, device="gpu0")
