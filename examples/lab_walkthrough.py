"""The lab, end to end, through the Python API: what `featdiff demo` does, one notebook cell at a time.

Run: python examples/lab_walkthrough.py   (about 2 minutes the first time on a 2-core CPU, the lab is then
cached in $FEATDIFF_CACHE or ~/.cache/featdiff; FEATDIFF_EXAMPLE_SMALL=1 runs the small test lab in seconds).
It writes its report to ./lab-walkthrough (or $FEATDIFF_EXAMPLE_OUT).
"""

# %% Settings
import os
from pathlib import Path

import featdiff as fd

SMALL = os.environ.get("FEATDIFF_EXAMPLE_SMALL") == "1"
OUT = Path(os.environ.get("FEATDIFF_EXAMPLE_OUT", "lab-walkthrough"))
config = fd.lab.LabConfig.small() if SMALL else fd.lab.LabConfig()
sae_steps = (
    10 if SMALL else 150
)  # SAE training steps (the demo's); the library default is sized for real models

# %% Train (or load from the cache) the lab's base, SFT and RL checkpoints
path = fd.lab.build(config, progress=not SMALL)
print("lab:", path)

# %% Behaviour: accuracy in-domain (the post-training task), near-domain and out-of-domain
accuracy = fd.lab.accuracy(path)
print(accuracy.set_index("checkpoint")[["in_domain", "near_domain", "out_of_domain"]].round(3))

# %% Features: one SAE per checkpoint, aligned to the base's, scored feature by feature
base, rl, sft = fd.lab.load(path)
cmp = fd.compare_checkpoints(base, rl, sft, train_kwargs={"n_steps": sae_steps}, progress=not SMALL)
print(
    cmp.summary[["reuse", "recombination", "novelty", "drift", "transfer_fve", "noise_floor_reuse"]].round(3)
)

# %% The two side by side (the demo's key table), and the per-feature table
from featdiff.report.figures import plot_accuracy  # noqa: E402
from featdiff.report.html import key_table, write_html_report  # noqa: E402

print(key_table(cmp, accuracy).round(3))
print(cmp.features.groupby(["checkpoint", "status"], observed=True).size().unstack(fill_value=0))

# %% Figures
fig = cmp.plot()
fig_acc = plot_accuracy(accuracy)

# %% The crosscoder view (Shi et al.'s analysis: MAS/NRN, evolution, generalization features, interventions)
try:
    from featdiff.analyses.crosscoder_view import CrosscoderViewConfig, crosscoder_view
except ImportError:
    view = None
else:
    view = crosscoder_view(path, CrosscoderViewConfig.small() if SMALL else None, progress=not SMALL)
    print(view)

# %% Save: the Comparison folder plus one self-contained HTML report
cmp.to_dir(OUT)
write_html_report(OUT / "report.html", cmp, accuracy=accuracy, view=view)
print("report:", OUT / "report.html")
