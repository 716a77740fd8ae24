"""train_saes(engine="batched"): N topk SAEs stepped as one module with a sparse decode must train what
sae-lens's SAETrainer trains, step for step (up to the order of float sums)."""

from __future__ import annotations

import pytest
import torch

import featdiff as fd
from featdiff.activations.activations import ActivationSet
from featdiff.errors import FeatdiffError


def _acts() -> ActivationSet:
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(48, 16, generator=g)
    codes = torch.relu(torch.randn(3000, 48, generator=g) - 1.0)
    base = codes @ mix
    return ActivationSet.from_tensors({"base": base, "rl": base + 0.2 * torch.randn(3000, 16, generator=g)})


# dead_feature_window 20: latents die early, so the AuxK loss is on for most of the run; warm-up and decay on
RUN = dict(
    d_sae=64, k=4, n_steps=200, batch_size=128, dead_feature_window=20, lr_warm_up_steps=10, progress=False
)


def _compare(ref: dict, got: dict) -> None:
    assert sorted(ref) == sorted(got)
    for key in ref:
        a, b = ref[key].featdiff_train, got[key].featdiff_train
        assert len(a["losses"]) == len(b["losses"]) == RUN["n_steps"]
        for x, y in zip(a["losses"], b["losses"], strict=True):
            assert abs(x - y) <= 1e-5 * abs(x), (key, x, y)
        aux_steps = [i for i, x in enumerate(a["aux_losses"]) if x > 0]
        assert len(aux_steps) > RUN["n_steps"] // 2  # the AuxK loss was exercised
        assert [i for i, x in enumerate(b["aux_losses"]) if x > 0] == aux_steps
        for x, y in zip(a["aux_losses"], b["aux_losses"], strict=True):
            assert abs(x - y) <= 1e-4 * abs(x) + 1e-7, (key, x, y)
        assert a["n_dead_at_end"] == b["n_dead_at_end"]
        for name, t in ref[key].state_dict().items():
            # measured: <= 7e-7 after 200 steps (float order of the sparse decode and the folded bias)
            assert torch.allclose(got[key].state_dict()[name], t, rtol=0, atol=1e-5), (key, name)


def test_batched_engine_trains_what_sae_lens_trains_four_saes():
    acts = _acts()
    extra = {"base_seed1": ("base", 1), "base_seed2": ("base", 2)}
    ref = fd.train_saes(acts, extra=extra, engine="sae-lens", **RUN)
    got = fd.train_saes(acts, extra=extra, **RUN)  # the default engine for topk SAEs
    _compare(ref, got)
    # an SAE does not depend on the others trained beside it
    alone = fd.train_saes(acts, names=["rl"], engine="batched", **RUN)
    assert torch.allclose(alone["rl"].W_dec, got["rl"].W_dec, rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [4, 8])  # d_sae 64: a sparse decode at k 4, a dense one at k 8 (SPARSE_RATIO)
def test_batched_engine_trains_what_sae_lens_trains_one_sae(k):
    acts = _acts()
    ref = fd.train_saes(acts, names=["base"], engine="sae-lens", **{**RUN, "k": k})
    got = fd.train_saes(acts, names=["base"], engine="batched", **{**RUN, "k": k})
    _compare(ref, got)
    assert got["base"].cfg.architecture() == "topk"
    assert got["base"].W_dec.norm(dim=1).allclose(torch.ones(RUN["d_sae"]))


def test_default_engine_is_batched_for_topk_and_sae_lens_for_the_others():
    acts = _acts()
    run = {**RUN, "n_steps": 30}
    default = fd.train_saes(acts, names=["rl"], **run)["rl"]
    batched = fd.train_saes(acts, names=["rl"], engine="batched", **run)["rl"]
    reference = fd.train_saes(acts, names=["rl"], engine="sae-lens", **run)["rl"]
    assert torch.equal(default.W_dec, batched.W_dec)
    assert not torch.equal(default.W_dec, reference.W_dec)  # float order differs, so the bits do
    assert torch.allclose(default.W_dec, reference.W_dec, rtol=0, atol=1e-5)
    jr = {"architecture": "jumprelu", "names": ["rl"], "n_steps": 5, "batch_size": 128, "progress": False}
    a = fd.train_saes(acts, **jr)["rl"]
    b = fd.train_saes(acts, engine="sae-lens", **jr)["rl"]
    assert torch.equal(a.W_dec, b.W_dec)


def test_batched_engine_takes_topk_only():
    acts = _acts()
    with pytest.raises(FeatdiffError, match="engine='sae-lens'"):
        fd.train_saes(acts, architecture="jumprelu", engine="batched", n_steps=2, progress=False)
    with pytest.raises(FeatdiffError, match="engine"):
        fd.train_saes(acts, engine="fast", n_steps=2, progress=False)
