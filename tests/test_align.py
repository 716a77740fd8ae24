import numpy as np
import pytest
import torch
from tests.conftest import make_sae

from featdiff import FeatdiffError
from featdiff.activations import ActivationSet
from featdiff.align import align, correlation_matrix, mmcs


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
    from featdiff.align import svcca

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=g)
    assert svcca(x, x @ torch.randn(8, 8, generator=g)) == pytest.approx(1.0, abs=1e-6)
    assert svcca(x, torch.randn(2000, 8, generator=g)) < 0.1
    # half of the directions shared: mean canonical correlation about 0.5
    y = torch.cat([x[:, :4], torch.randn(2000, 4, generator=g)], dim=1)
    assert svcca(x, y) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(FeatdiffError, match="paired rows"):
        svcca(x, x[:10])
