"""Old keyword spellings keep working until phase 2 of issue 17 removes them, and say what replaces them."""

import pytest
import torch

import featdiff as fd
from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
from featdiff.dictionaries.crosscoder.model import Crosscoder
from featdiff.dictionaries.sae import sae_from_dictionary


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
