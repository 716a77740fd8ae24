"""How a run's model-specific features change over its checkpoints (do they settle early or keep moving?).

The default, faithful definition (``method="decoders"``): for every checkpoint t of a run, one 2-model
crosscoder (base, checkpoint t) trained on the same tokens (``train_evolution_crosscoders``: small,
seeded); its top-k features by NRN (n^t / (n^base + n^t), the most checkpoint-specific; dead features left
out) are the checkpoint's specific set S_t, taken as the unit-normalised raw-unit decoder rows of
checkpoint t. Two sets are compared by a one-to-one matching of their directions (Hungarian on cosine,
or each row's best match with ``match="max"``): ``overlap(S_t, S_u)`` is the fraction of S_t's rows
matched with cosine >= ``threshold`` (0.7, the reuse threshold). Each crosscoder is trained separately,
so its feature indices mean nothing across checkpoints; directions do.

The cheaper alternative (one shared dictionary, e.g. the (base, final) crosscoder applied to every
checkpoint's activations): give each checkpoint a per-feature score (e.g. the mean activation difference
checkpoint minus base); S_t is the top-k features by score and overlap is ``|S_t & S_u| / |S_t|`` by
index. It is biased toward "settled" (the dictionary only has the final checkpoint's features), so it
is offered for large models only.

Table: one row per (run, step): ``overlap_prev`` = overlap(S_t, S_{t-1}) (NaN at the first step),
``overlap_final`` = overlap(S_t, S_final) (1 at the final step). Shi et al. (2026) read a curve that
reaches 1 early as settled (SFT) and one that stays low as continually evolving (RL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.activations.collect import collect_activations
from featdiff.core.config import check_int
from featdiff.core.output import progress_bar
from featdiff.dictionaries.crosscoder.model import is_crosscoder, stack
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.errors import FeatdiffError, check_choice
from featdiff.metrics.crosscoder import nrn
from featdiff.metrics.reuse import REUSE_THRESHOLD

# a feature kept from one checkpoint to the next: its decoder direction matched at the reuse cosine
EVOLUTION_THRESHOLD = REUSE_THRESHOLD

EVOLUTION_COLUMNS = ["run", "step", "overlap_prev", "overlap_final"]
MATCHES = ("hungarian", "max")


class CheckpointCrosscoder(NamedTuple):
    """A (base, checkpoint) crosscoder and the features that fired on its training tokens."""

    crosscoder: Any
    live_features: list[int]


def _tuned_name(cc: Any, base: str) -> str:
    rest = [n for n in cc.names if n != base]
    if base not in cc.names or len(rest) != 1:
        raise FeatdiffError(
            f"feature_evolution needs 2-model crosscoders (base={base!r}, checkpoint); got names {cc.names}."
        )
    return rest[0]


def top_specific_features(
    cc: Any, k: int = 20, base: str = "base", live: Sequence[int] | None = None
) -> list[int]:
    """The k features of a (base, checkpoint) crosscoder with the largest NRN, dead ones left out.

    Features outside ``live`` (when given) are left out as dead. Ties go to the lower index.

    Examples
    --------
    >>> import torch
    >>> from featdiff.dictionaries.crosscoder import Crosscoder, CrosscoderConfig
    >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=2, d_sae=3, k=1))
    >>> with torch.no_grad():
    ...     cc.W_dec[0] = torch.tensor([[1.0, 0], [1.0, 0], [1.0, 0]])
    ...     cc.W_dec[1] = torch.tensor([[0.1, 0], [3.0, 0], [1.0, 0]])
    >>> top_specific_features(cc, k=2)
    [1, 2]
    """

    tuned = _tuned_name(cc, base)
    scores = nrn(cc, tuned=tuned, base=base).to_numpy().copy()
    if live is not None:
        dead = np.ones(len(scores), dtype=bool)
        dead[np.asarray(live, dtype=int)] = False
        scores[dead] = np.nan
    order = [
        int(i)
        for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
        if not np.isnan(scores[i])
    ]
    return order[:k]


def direction_overlap(
    a: Float[Tensor, "n_a d_in"],
    b: Float[Tensor, "n_b d_in"],
    threshold: float = EVOLUTION_THRESHOLD,
    match: str = "hungarian",
) -> float:
    """Fraction of the rows of ``a`` matched in ``b`` with cosine >= threshold (NaN when ``a`` is empty).

    Examples
    --------
    >>> import torch
    >>> direction_overlap(torch.eye(3), torch.tensor([[1.0, 0, 0], [0, 0.8, 0.6]]))
    0.6666666666666666
    """
    check_choice("match", match, MATCHES, where="direction_overlap")
    if len(a) == 0:
        return float("nan")
    if len(b) == 0:
        return 0.0
    an = a.double() / a.double().norm(dim=-1, keepdim=True).clamp(min=1e-12)
    bn = b.double() / b.double().norm(dim=-1, keepdim=True).clamp(min=1e-12)
    cos = (an @ bn.T).numpy()
    if match == "max":
        return float((cos.max(1) >= threshold).mean())
    from scipy.optimize import linear_sum_assignment  # deferred: scipy ~1 s to import

    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float((cos[rows, cols] >= threshold).sum() / len(a))


def _index_overlap(a: list[int], b: list[int]) -> float:
    return len(set(a) & set(b)) / len(a) if a else float("nan")


def _top_by_score(scores: Any, k: int) -> list[int]:
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=float).reshape(-1)
    order = [int(i) for i in np.argsort(-np.nan_to_num(s, nan=-np.inf), kind="stable") if not np.isnan(s[i])]
    return order[:k]


def feature_evolution(
    series: Mapping[str, Mapping[int, Any]],
    k: int = 20,
    threshold: float = EVOLUTION_THRESHOLD,
    base: str = "base",
    match: str = "hungarian",
) -> pd.DataFrame:
    """Overlap of each checkpoint's top-k model-specific features with the previous and the final one.

    ``series``: ``{run: {step: entry}}``, every entry of a run of one kind: a 2-model (base, checkpoint)
    crosscoder or a ``(crosscoder, live_features)`` pair (``method="decoders"`` of the module docstring:
    directions matched at ``threshold``), or
    per-feature scores of one shared dictionary (a 1-D tensor / array / Series; overlap by index). Steps
    are sorted; the largest is the final checkpoint.

    Returns a DataFrame: run (str), step (int), overlap_prev (float, NaN at the first step),
    overlap_final (float).

    Examples
    --------
    >>> import torch
    >>> series = {"sft": {0: torch.tensor([3.0, 2, 1, 0]), 1: torch.tensor([3.0, 2, 0, 1]),
    ...                   2: torch.tensor([3.0, 2, 0, 1])}}
    >>> feature_evolution(series, k=2)
       run  step  overlap_prev  overlap_final
    0  sft     0           NaN            1.0
    1  sft     1           1.0            1.0
    2  sft     2           1.0            1.0
    """
    if not isinstance(series, Mapping) or not series:
        raise FeatdiffError("feature_evolution needs a non-empty dict {run: {step: crosscoder or scores}}.")
    check_int("feature_evolution", "k", k)
    if not 0 < threshold <= 1:
        raise FeatdiffError(
            f"The 'threshold' parameter of feature_evolution must be in (0, 1]; got {threshold}."
        )
    check_choice("match", match, MATCHES, where="feature_evolution")
    rows = []
    for run, steps in series.items():
        if not isinstance(steps, Mapping) or not steps:
            raise FeatdiffError(f"Run {run!r} needs a non-empty dict {{step: crosscoder or scores}}.")
        order = sorted(steps)
        final = order[-1]
        overlap = _overlap_fn(steps, run, k, threshold, base, match)
        for i, s in enumerate(order):
            prev = overlap(s, order[i - 1]) if i else float("nan")
            rows.append((str(run), int(s), prev, overlap(s, final)))
    return pd.DataFrame(rows, columns=EVOLUTION_COLUMNS).astype(
        {"step": "int64", "overlap_prev": "float64", "overlap_final": "float64"}
    )


def _overlap_fn(steps: Mapping[int, Any], run: Any, k: int, threshold: float, base: str, match: str):
    """overlap(s, u) between the top-k specific sets of steps s and u of one run."""
    kinds = {_entry_kind(steps[s], run, s) for s in steps}
    if len(kinds) > 1:
        raise FeatdiffError(f"Run {run!r} mixes crosscoders and score vectors; use one kind per run.")
    if kinds == {"crosscoder"}:
        sets = {}
        for s, entry in steps.items():
            cc, live = entry if isinstance(entry, tuple) else (entry, None)
            top = top_specific_features(cc, k=k, base=base, live=live)
            sets[s] = cc.decoder(_tuned_name(cc, base))[top]
        return lambda s, u: direction_overlap(sets[s], sets[u], threshold, match)
    idx = {s: _top_by_score(v, k) for s, v in steps.items()}
    return lambda s, u: _index_overlap(idx[s], idx[u])


def _entry_kind(entry: Any, run: Any, step: Any) -> str:
    if isinstance(entry, tuple) and len(entry) == 2:
        entry = entry[0]
    if is_crosscoder(entry):
        return "crosscoder"
    if (
        isinstance(entry, (Tensor, np.ndarray, pd.Series, list))
        and np.asarray(entry.detach().cpu() if isinstance(entry, Tensor) else entry).ndim == 1
    ):
        return "scores"
    raise FeatdiffError(
        f"Entry (run {run!r}, step {step!r}) must be a 2-model Crosscoder or a 1-D per-feature score vector; "
        f"got {type(entry).__name__}."
    )


def train_evolution_crosscoders(
    base: Any,
    runs: Mapping[str, Mapping[int, Any]],
    tokens: Int[Tensor, "batch seq"],
    hook: str | None = None,
    d_sae: int = 128,
    k: int = 8,
    n_steps: int = 200,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, dict[int, CheckpointCrosscoder]]:
    """One small seeded (base, checkpoint) crosscoder per checkpoint of every run, on the same tokens.

    ``runs``: ``{run: {step: checkpoint}}`` (anything ``load_model`` takes). Each crosscoder's names are
    ``["base", run]``; each comes back as a ``CheckpointCrosscoder(crosscoder, live_features)``, the
    features that fired on the tokens (``feature_evolution`` leaves the others out). Pass the result
    to ``feature_evolution``. Cost: one crosscoder of ``n_steps`` steps per checkpoint (about
    3-10 s each for d_model=64, d_sae=128 on two CPU cores); ``shared_dictionary_scores`` is the cheap
    alternative.

    Examples
    --------
    >>> import torch
    >>> from transformer_lens import HookedTransformer
    >>> cfg = dict(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu")
    >>> base = HookedTransformer(dict(cfg, seed=0))
    >>> runs = {"rl": {1: HookedTransformer(dict(cfg, seed=1)), 2: HookedTransformer(dict(cfg, seed=2))}}
    >>> tokens = torch.randint(0, 11, (16, 8), generator=torch.Generator().manual_seed(0))
    >>> ccs = train_evolution_crosscoders(base, runs, tokens, "blocks.0.hook_resid_post", d_sae=16, k=2, n_steps=5, progress=False)
    >>> list(feature_evolution(ccs, k=4).columns)
    ['run', 'step', 'overlap_prev', 'overlap_final']
    """


    if not isinstance(runs, Mapping) or not runs:
        raise FeatdiffError("train_evolution_crosscoders needs a non-empty dict {run: {step: checkpoint}}.")
    if "base" in runs:
        raise FeatdiffError("A run may not be called 'base' (the crosscoders' reference name); rename it.")
    out: dict[str, dict[int, Any]] = {}
    total = sum(len(s) for s in runs.values())
    bar = progress_bar(total=total, desc="evolution crosscoders", disable=not progress)
    for run, steps in runs.items():
        keys = {f"step_{s}": s for s in steps}
        acts = collect_activations(
            {"base": base, **{key: steps[s] for key, s in keys.items()}}, tokens, hook, progress=False
        )
        out[run] = {}
        for key, s in keys.items():
            pair = ActivationSet.from_tensors({"base": acts["base"], run: acts[key]}, hook=acts.hook)
            cc = train_crosscoder(
                pair, d_sae=d_sae, k=k, seed=seed, n_steps=n_steps, batch_size=batch_size, progress=False
            )
            codes = cc.encode_acts(pair)
            live = torch.nonzero((codes != 0).any(0)).flatten().tolist()
            out[run][int(s)] = CheckpointCrosscoder(cc, live)
            bar.update()
    bar.close()
    return out


def shared_dictionary_scores(
    cc: Any,
    base: Any,
    steps: Mapping[int, Any],
    tokens: Int[Tensor, "batch seq"],
    hook: str | None = None,
    base_name: str = "base",
) -> dict[int, Float[Tensor, " d_sae"]]:
    """Per-feature scores of every checkpoint under ONE (base, tuned) crosscoder (the cheap alternative).

    Checkpoint t's score of feature k is the mean over tokens of ``f_k(base, a^t) - f_k(base, a^base)``:
    how much more the feature fires when checkpoint t's activation fills the tuned slot than when the
    base's own does. Pass ``{run: shared_dictionary_scores(...)}`` to ``feature_evolution``.

    Examples
    --------
    >>> import torch
    >>> from transformer_lens import HookedTransformer
    >>> from featdiff.dictionaries.crosscoder import Crosscoder, CrosscoderConfig
    >>> cfg = dict(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu")
    >>> base, steps = HookedTransformer(dict(cfg, seed=0)), {1: HookedTransformer(dict(cfg, seed=1))}
    >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=16, k=2, sparsity="l1"))
    >>> tokens = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(0))
    >>> shared_dictionary_scores(cc, base, steps, tokens, "blocks.0.hook_resid_post")[1].shape
    torch.Size([16])
    """

    tuned = _tuned_name(cc, base_name)
    hook = hook or getattr(cc, "hook", None)
    keys = {f"step_{s}": s for s in steps}
    acts = collect_activations(
        {base_name: base, **{key: steps[s] for key, s in keys.items()}}, tokens, hook, progress=False
    )
    with torch.no_grad():
        a0 = acts[base_name]
        f0 = cc.encode(stack({base_name: a0, tuned: a0}, cc.names))
        return {
            int(s): (cc.encode(stack({base_name: a0, tuned: acts[key]}, cc.names)) - f0).mean(0)
            for key, s in keys.items()
        }


def plot_feature_evolution(table: pd.DataFrame, ax: Sequence[Any] | None = None) -> Any:
    """Two panels, overlap with the previous and with the final checkpoint against step, one line per run.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"run": ["rl", "rl"], "step": [1, 2], "overlap_prev": [float("nan"), 0.5],
    ...                   "overlap_final": [0.5, 1.0]})
    >>> fig = plot_feature_evolution(t)
    >>> len(fig.axes)
    2
    """
    missing = [c for c in EVOLUTION_COLUMNS if c not in table.columns]
    if missing:
        raise FeatdiffError(f"The table lacks the columns {missing}; pass the output of feature_evolution.")
    if ax is None:
        from matplotlib.figure import Figure  # deferred: matplotlib ~1.5 s to import

        fig = Figure(figsize=(8, 3))
        ax = fig.subplots(1, 2, sharey=True)
    else:
        fig = ax[0].figure
    for run, t in table.groupby("run", sort=False):
        t = t.sort_values("step")
        ax[0].plot(t["step"], t["overlap_prev"], marker="o", label=str(run))
        ax[1].plot(t["step"], t["overlap_final"], marker="o", label=str(run))
    ax[0].set(
        title="overlap with previous checkpoint",
        xlabel="step",
        ylabel="overlap of top-k specific features",
        ylim=(-0.05, 1.05),
    )
    ax[1].set(title="overlap with final checkpoint", xlabel="step")
    ax[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: covers no line
    fig.tight_layout()
    return fig
