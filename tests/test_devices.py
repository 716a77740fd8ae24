"""Device paths without an accelerator: dictionaries follow the activations' device ("meta" stands in for a
GPU: no data, but every op checks that its tensors share a device)."""

from __future__ import annotations

import torch

import featdiff as fd
from conftest import make_sae

META = torch.device("meta")


def _crosscoder(seed: int = 0) -> fd.Crosscoder:
    return fd.Crosscoder(fd.CrosscoderConfig(names=["base", "rl"], d_in=16, d_sae=32, k=2, seed=seed))


def test_sae_edit_runs_where_the_activations_are_and_leaves_the_dictionary_put():
    sae = make_sae(d_in=16, d_sae=64, k=4)
    edit = fd.FeatureEdit(sae, [0, 3], mode="scale", alpha=2.0, hook="blocks.0.hook_resid_post")
    h = torch.randn(2, 5, 16)
    out = edit.apply(h.to(META))
    assert out.device == META and out.shape == h.shape
    assert sae.W_dec.device.type == "cpu"  # the caller's SAE was copied, not moved
    assert edit.on_device(META) is edit.on_device(META) and edit.on_device("cpu") is sae
    # on the CPU the result is the plain edit: h + (alpha - 1) f_k d_k over the edited features
    f = sae.encode(h)
    want = h + f[..., [0, 3]] @ sae.W_dec[[0, 3]]
    torch.testing.assert_close(edit.apply(h), want, rtol=1e-5, atol=1e-5)


def test_crosscoder_edit_and_encoding_follow_the_inputs_device():
    cc = _crosscoder()
    edit = fd.FeatureEdit(cc, [1], model_name="rl", codes="single", hook="blocks.0.hook_resid_post")
    out = edit.apply(torch.randn(3, 4, 16, device=META))
    assert out.device == META and tuple(out.shape) == (3, 4, 16) and cc.W_dec.device.type == "cpu"
    # a crosscoder placed on another device takes CPU inputs there, and hands its tables back on the CPU
    on_meta = _crosscoder().to(META)
    x = torch.randn(5, 2, 16)
    assert on_meta.encode(x).device == META and on_meta.decode(torch.zeros(5, 32)).device == META
    acts = fd.ActivationSet.from_tensors({"base": torch.randn(8, 16), "rl": torch.randn(8, 16)})
    codes = cc.encode_acts(acts)
    assert codes.device.type == "cpu" and codes.shape == (8, 32)
    ev = cc.evaluate(acts)
    assert list(ev["checkpoint"]) == ["base", "rl"] and ev["fve"].notna().all()


def test_explicit_cpu_device_trains_and_returns_cpu_dictionaries():
    g = torch.Generator().manual_seed(0)
    acts = fd.ActivationSet.from_tensors(
        {"base": torch.randn(256, 8, generator=g), "rl": torch.randn(256, 8, generator=g)}
    )
    saes = fd.train_saes(acts, k=2, n_steps=5, batch_size=64, progress=False, device="cpu")
    default = fd.train_saes(acts, k=2, n_steps=5, batch_size=64, progress=False)
    assert saes["rl"].W_dec.device.type == "cpu" and torch.equal(saes["rl"].W_dec, default["rl"].W_dec)
    cc = fd.train_crosscoder(acts, d_sae=16, k=2, n_steps=5, batch_size=64, progress=False, device="cpu")
    ref = fd.train_crosscoder(acts, d_sae=16, k=2, n_steps=5, batch_size=64, progress=False)
    assert cc.W_dec.device.type == "cpu" and torch.equal(cc.W_dec, ref.W_dec)
