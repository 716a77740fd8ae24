import numpy as np
import pytest
import torch
from tests.conftest import make_sae

from featdiff import FeatdiffError
from featdiff.activations.activations import ActivationSet
from featdiff.alignment.matching import align, correlation_matrix, mmcs


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def test_hungarian_recovers_a_permutation():
    W = unit(torch.randn(40, 16))
    perm = torch.randperm(40)
    al = align(W, W[perm], reference_name="base", target_name="rl")
    assert (al.match == perm.numpy()).all()
    np.testing.assert_allclose(al.similarity, 1.0, atol=1e-6)


def test_hungarian_is_one_to_one_where_max_is_not():
    ref = torch.eye(3)
    tgt = unit(torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.2, 0.0], [0.0, 0.0, 1.0]]))
    hung = align(ref, tgt, method="hungarian")
    assert sorted(hung.match.tolist()) == [0, 1, 2]
    mx = align(ref, tgt, method="max")
    assert mx.match.tolist() == [0, 0, 2]


def test_rectangular_leaves_extra_targets_unmatched():
    ref = torch.eye(4)[:2]
    al = align(ref, torch.eye(4))
    assert (al.match >= 0).sum() == 2
    assert np.isnan(al.similarity[al.match < 0]).all()


def test_dead_features_are_left_out_and_activation_matching_finds_the_permutation(planted):
    D = planted.dictionaries["base"]
    perm = torch.randperm(len(D))
    ref, tgt = make_sae(D, k=8), make_sae(D[perm], k=8)
    acts = planted.sample(4000, seed=3).select(["base"])
    pair = ActivationSet({"base": acts["base"], "rl": acts["base"]})
    al = align(ref, tgt, on="activations", activations=pair, target_name="rl")
    live = al.tgt_live
    assert live.mean() > 0.95
    assert (al.match[live] == perm.numpy()[live]).mean() > 0.99
    # a feature whose encoder row is zero never fires: it is dead and left unmatched
    from featdiff.dictionaries.sae import sae_from_dictionary

    W_enc = D.T.clone()
    W_enc[:, 0] = 0
    al2 = align(ref, sae_from_dictionary(D, W_enc=W_enc, k=8), activations=pair, target_name="rl")
    assert not al2.tgt_live[0] and al2.match[0] == -1 and np.isnan(al2.similarity[0])
    assert al2.tgt_live[1:].mean() > 0.95
    # live masks can also be given by hand
    al3 = align(D, D, tgt_live=np.arange(len(D)) != 5)
    assert al3.match[5] == -1 and (al3.match[np.arange(len(D)) != 5] >= 0).all()


def test_correlation_matrix_matches_numpy():
    a, b = torch.randn(500, 5).relu(), torch.randn(500, 3).relu()
    b[:, 0] = a[:, 2] * 2 + 0.1
    got = correlation_matrix(a, b, batch_size=128).numpy()
    want = np.corrcoef(a.T.numpy(), b.T.numpy())[:5, 5:]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[2, 0] == pytest.approx(1.0, abs=1e-5)


def test_mmcs_of_identical_and_orthogonal_dictionaries():
    assert mmcs(torch.eye(4), torch.eye(4)) == pytest.approx(1.0)
    assert mmcs(torch.eye(4)[:2], torch.eye(4)[2:]) == pytest.approx(0.0)


def test_bad_inputs_raise():
    with pytest.raises(FeatdiffError, match="method"):
        align(torch.eye(3), torch.eye(3), method="greedy")
    with pytest.raises(FeatdiffError, match="d_in"):
        align(torch.eye(3), torch.eye(4))
    with pytest.raises(FeatdiffError, match="activations"):
        align(torch.eye(3), torch.eye(3), on="activations")
    with pytest.raises(FeatdiffError, match="W_dec"):
        align("not a dictionary", torch.eye(3))


def test_nan_decoders_raise_naming_the_rows():
    W = torch.eye(4)
    W[2, 1] = float("nan")
    with pytest.raises(FeatdiffError, match="NaN or infinite values in 1 of 4 rows"):
        align(torch.eye(4), W)


def test_svcca_known_answers():
    from featdiff.alignment.matching import svcca

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=g)
    assert svcca(x, x @ torch.randn(8, 8, generator=g)) == pytest.approx(1.0, abs=1e-6)
    assert svcca(x, torch.randn(2000, 8, generator=g)) < 0.1
    # half of the directions shared: mean canonical correlation about 0.5
    y = torch.cat([x[:, :4], torch.randn(2000, 4, generator=g)], dim=1)
    assert svcca(x, y) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(FeatdiffError, match="paired rows"):
        svcca(x, x[:10])


@pytest.mark.parametrize("n_ref,n_tgt,d_in,noise", [(300, 300, 32, 0.3), (400, 250, 16, 2.0), (250, 400, 64, 0.8)])
def test_sparse_solver_reaches_the_dense_optimum_and_certifies_it(n_ref, n_tgt, d_in, noise):
    g = torch.Generator().manual_seed(n_ref + n_tgt)
    ref = unit(torch.randn(n_ref, d_in, generator=g))
    base = ref[torch.randint(0, n_ref, (n_tgt,), generator=g)]
    tgt = unit(base + noise * torch.randn(n_tgt, d_in, generator=g) / d_in**0.5)
    dense = align(ref, tgt, solver="dense")
    sparse = align(ref, tgt, solver="sparse")
    assert sparse.exact
    total = lambda al: float(np.nansum(al.similarity))  # noqa: E731
    assert total(sparse) == pytest.approx(total(dense), abs=1e-4)
    assert (sparse.match >= 0).sum() == (dense.match >= 0).sum() == min(n_ref, n_tgt)
    ok = sparse.match >= 0  # every matched pair's similarity is the true cosine of that pair
    cos = (tgt[ok] * ref[sparse.match[ok]]).sum(1).double().numpy()
    np.testing.assert_allclose(sparse.similarity[ok], cos, atol=1e-5)
    assert len(set(sparse.match[ok].tolist())) == ok.sum()  # one-to-one


def test_streamed_max_matching_equals_the_dense_one():
    g = torch.Generator().manual_seed(3)
    ref, tgt = unit(torch.randn(200, 16, generator=g)), unit(torch.randn(150, 16, generator=g))
    a, b = align(ref, tgt, method="max", solver="dense"), align(ref, tgt, method="max", solver="sparse")
    assert (a.match == b.match).all() and np.allclose(a.similarity, b.similarity, atol=1e-6)


def test_sparse_solver_needs_decoder_cosines():
    with pytest.raises(FeatdiffError, match="solver='sparse'"):
        align(torch.eye(3), torch.eye(3), on="activations", solver="sparse")


def test_alignment_repr_is_one_short_line():
    import torch

    from featdiff.alignment.matching import align

    g = torch.Generator().manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(512, 32, generator=g), dim=1)
    al = align(W, W[torch.randperm(512, generator=g)], reference_name="base", target_name="rl")
    text = repr(al)
    assert "\n" not in text and len(text) < 160, text
    assert "d_ref=512" in text and "n_matched=512" in text and "mean cosine=1.000" in text


@pytest.mark.parametrize("n_ref,n_tgt", [(300, 2100), (2100, 300)])  # more target rows than one block (1,024)
def test_dense_solver_equals_scipy_on_the_full_cosine_matrix(n_ref, n_tgt):
    from scipy.optimize import linear_sum_assignment

    g = torch.Generator().manual_seed(n_ref)
    ref, tgt = unit(torch.randn(n_ref, 24, generator=g)), unit(torch.randn(n_tgt, 24, generator=g))
    cos = (tgt @ ref.T).double().numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    al = align(ref, tgt, solver="dense")
    ok = al.match >= 0
    assert ok.sum() == min(n_ref, n_tgt) and len(set(al.match[ok].tolist())) == ok.sum()
    assert float(al.similarity[ok].sum()) == pytest.approx(float(cos[rows, cols].sum()), abs=1e-4)
    np.testing.assert_allclose(al.similarity[ok], cos[np.flatnonzero(ok), al.match[ok]], atol=1e-6)
    mx = align(ref, tgt, method="max", solver="dense")
    assert (mx.match == cos.argmax(1)).all()
    np.testing.assert_allclose(mx.similarity, cos.max(1), atol=1e-6)
