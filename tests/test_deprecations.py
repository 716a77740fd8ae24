"""Old spellings keep working for one release and say what replaces them (issue: one home per idea)."""

import importlib

import pytest
import torch

import featdiff as fd
from featdiff.dictionaries.crosscoder.model import Crosscoder, CrosscoderConfig
from featdiff.dictionaries.sae import sae_from_dictionary


def test_old_module_paths_warn_and_give_the_same_objects():
    compare = importlib.import_module("featdiff.compare")
    with pytest.warns(DeprecationWarning, match="featdiff.comparison.scoring.compare_dictionaries"):
        assert compare.compare_dictionaries is fd.compare_dictionaries
    with pytest.warns(DeprecationWarning, match="featdiff.comparison.table.Comparison"):
        assert compare.Comparison is fd.Comparison
    analysis = importlib.import_module("featdiff.analysis")
    with pytest.warns(DeprecationWarning, match="featdiff.analyses.crosscoder_view.crosscoder_view"):
        assert analysis.crosscoder_view is fd.crosscoder_view
    with pytest.raises(AttributeError):
        compare.no_such_name  # noqa: B018
    dictionaries = importlib.import_module("featdiff.dictionaries")
    with pytest.warns(DeprecationWarning, match="unit_decoder"):
        assert dictionaries.decoder_directions is dictionaries.unit_decoder


def test_crosscoder_metric_methods_warn_and_match_the_functions():
    cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=4, d_sae=8, k=2))
    with pytest.warns(DeprecationWarning, match=r"featdiff.nrn\(crosscoder"):
        old = cc.nrn("rl")
    assert old.equals(fd.nrn(cc, "rl"))
    with pytest.warns(DeprecationWarning, match=r"featdiff.mas"):
        assert cc.mas().equals(fd.mas(cc))


def test_compare_crosscoder_thresholds_as_keywords_warn_and_equal_the_config():
    cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=4, d_sae=8, k=2))
    with pytest.warns(DeprecationWarning, match=r"config=CompareConfig\(nrn_shared=...\)"):
        old = fd.compare_crosscoder(cc, nrn_shared=(0.2, 0.8), progress=False)
    new = fd.compare_crosscoder(cc, config=fd.CompareConfig(nrn_shared=(0.2, 0.8)), progress=False)
    assert old.summary.equals(new.summary)
    with pytest.raises(fd.FeatdiffError, match="unknown arguments"):
        fd.compare_crosscoder(cc, nrn_shard=(0.2, 0.8), progress=False)


def test_noise_floor_spellings_warn_and_equal_replicas():
    W = torch.eye(8)
    saes = {"base": sae_from_dictionary(W, k=2), "rl": sae_from_dictionary(W[[1, 0, 2, 3, 4, 5, 6, 7]], k=2)}
    rep = sae_from_dictionary(W[[0, 1, 2, 3, 5, 4, 6, 7]], k=2)
    with pytest.warns(FutureWarning, match="replicas="):
        old = fd.compare_dictionaries(saes, noise_floor=rep, progress=False)
    new = fd.compare_dictionaries(saes, replicas=[rep], progress=False)
    assert old.summary.equals(new.summary)
