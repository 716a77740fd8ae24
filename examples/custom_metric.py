"""A custom metric in one notebook cell: register it, and every comparison computes it.

Run: python examples/custom_metric.py   (or open it in Jupyter as a notebook, with jupytext: the cells are the
`# %%` blocks)
"""

# %% Setup
import numpy as np
import pandas as pd

import featdiff as fd

# %% Data: planted checkpoints with known answers
# Planted checkpoints (known answers) and SAEs built straight from their dictionaries: fast and offline.
planted = fd.synthetic.plant_checkpoints(d_in=32, n_atoms=128, seed=0)
acts = planted.sample(4000)
saes = {name: fd.sae_from_dictionary(D, k=8) for name, D in planted.dictionaries.items()}


# %% A metric is a function of the comparison's context, registered once: a float per checkpoint...
@fd.register_metric("sharpness", higher_is_better=True)
def sharpness(ctx) -> float:
    """Fraction of reused features whose firing frequency changed by less than a factor of 2."""
    f = ctx.features
    reused = f[f.status == "reused"]
    return float((reused.freq_shift < np.log(2)).mean())


# %% ...or one value per target feature (a Series indexed by feature)
@fd.register_metric("code_correlation", higher_is_better=True)
def code_correlation(ctx) -> pd.Series:
    """Per target feature: correlation of its codes with its matched base feature's, on the same tokens."""
    al = ctx.alignment
    out = pd.Series(np.nan, index=range(al.d_tgt))
    ok = np.flatnonzero(al.match >= 0)
    t = ctx.target_codes[:, ok]
    r = ctx.reference_codes[:, al.match[ok]]
    t, r = t - t.mean(0), r - r.mean(0)
    out.iloc[ok] = ((t * r).sum(0) / (t.norm(dim=0) * r.norm(dim=0)).clamp_min(1e-12)).numpy()
    return out


# %% Every comparison now computes both: a summary column and a features column
cmp = fd.compare_dictionaries(saes, acts, progress=False)
print(cmp.summary[["reuse_raw", "recombination_raw", "novelty_raw", "sharpness"]].round(3))  # no replicas: raw
print(cmp.features.groupby(["checkpoint", "status"], observed=True)["code_correlation"].mean().round(3))
