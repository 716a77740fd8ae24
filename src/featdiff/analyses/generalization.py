"""The few features that carry a tuned model's gains over a reference, task by task and across tasks.

For each task, the *critical* samples are those the reference gets wrong and the tuned model gets right.
Feature k's score on a task is the mean, over its critical samples, of (tuned code - reference code) of k,
each sample's code being the mean over its answer tokens (see ``sample_codes``). A task selects the
features whose score is positive and at least ``fraction`` of the task's largest score; the generalization
features are the intersection of the tasks' selections (Shi et al. 2026, who use RL vs base on
out-of-domain tasks).

Selection without bias: by default (``heldout_fraction=0.5``) each task's critical samples are split by
sample (a seeded permutation) into a *selection* part, the only one that scores features, and a *held-out* part
(``GeneralizationFeatures.heldout(task)``), on which interventions are then scored. Scoring an
intervention on the samples that chose its features rewards the selection's own noise.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff.analyses.interventions.controls import feature_codes
from featdiff.analyses.interventions.edit import FeatureEdit
from featdiff.errors import FeatdiffError, check_choice, warn

POSITIONS = ("answer", "prompt", "last")
CORRECTNESS_COLUMNS = ["checkpoint", "task", "sample", "correct"]
ALL_TASKS = "all"
MIN_CRITICAL = 10

TASK_COLUMNS = ["task", "n_samples", "n_critical", "n_selection", "n_heldout", "max_score", "n_selected", "votes"]
"""Columns of ``GeneralizationFeatures.tasks``."""
OVERLAP_COLUMNS = ["task_a", "task_b", "n_a", "n_b", "n_shared", "jaccard"]
"""Columns of ``GeneralizationFeatures.overlaps``."""


def sample_codes(
    dictionary: Any,
    model: Any,
    prompts: Int[Tensor, "n_samples n_prompt"],
    answers: Int[Tensor, "n_samples n_answer"] | None = None,
    positions: str = "answer",
    hook: str | None = None,
    model_name: str | None = None,
    others: Mapping[str, Any] | None = None,
    codes: str = "joint",
    batch_size: int = 64,
) -> Float[Tensor, "n_samples d_sae"]:
    """Per sample, the mean over ``positions`` of each feature's activation in ``model``, in raw units (on
    the CPU; the codes are computed where the model runs, with the dictionary copied there if need be).

    A feature's activation is ``f_k * ||d_k||``, the norm of what it adds to this model's activation (its
    code times the norm of its raw-unit decoder row: ``cc.decoder(model_name)`` of a crosscoder, ``W_dec``
    of an SAE), so that codes of different checkpoints are comparable even for a crosscoder, whose codes
    are shared. ``positions``:

    - ``"answer"`` (default): the gold answer is teacher-forced after the prompt and the positions that
      *predict* answer tokens are averaged (the last prompt token to the second-to-last answer token), the
      positions where a correct and an incorrect model differ;
    - ``"prompt"``: every prompt token; ``"last"``: the last prompt token only.

    Examples
    --------
    >>> import torch
    >>> from sae_lens import StandardSAE, StandardSAEConfig
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
    >>> prompts, answers = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6], [6, 5]])
    >>> sample_codes(sae, model, prompts, answers, hook="blocks.0.hook_resid_post").shape
    torch.Size([2, 8])
    """

    check_choice("positions", positions, POSITIONS, where="sample_codes")
    prompts = torch.as_tensor(prompts)
    if prompts.ndim != 2:
        raise FeatdiffError(f"prompts must have shape (n_samples, n_prompt); got {tuple(prompts.shape)}.")
    edit = FeatureEdit(dictionary, [], model_name=model_name, others=others, codes=codes, hook=hook)
    p = prompts.shape[1]
    if positions == "answer":
        if answers is None:
            raise FeatdiffError(
                "positions='answer' needs the gold answers; pass answers=... or positions='prompt'."
            )
        answers = torch.as_tensor(answers)
        if answers.ndim != 2 or answers.shape[0] != prompts.shape[0]:
            raise FeatdiffError(
                f"answers must have shape (n_samples={prompts.shape[0]}, n_answer); got {tuple(answers.shape)}."
            )
        tokens = torch.cat([prompts, answers[:, :-1].to(prompts)], dim=1)
        sl = slice(p - 1, tokens.shape[1])
    else:
        tokens = prompts
        sl = slice(0, p) if positions == "prompt" else slice(p - 1, p)
    f = feature_codes(model, edit, tokens, batch_size=batch_size)[:, sl].mean(1)
    if edit.kind == "crosscoder":
        norms = dictionary.decoder(model_name).norm(dim=-1)
    else:
        norms = dictionary.W_dec.detach().norm(dim=-1)
    return (f * norms.to(f)).detach().cpu()


@dataclass
class GeneralizationFeatures:
    """What ``generalization_features`` found; every field a tidy DataFrame.

    - ``features``: the intersection; feature, min_score, mean_score (over the tasks that vote), sorted by
      min_score descending.
    - ``scores``: one row per (task, feature): score (float), selected (bool).
    - ``overlaps``: one row per task pair: task_a, task_b, n_a, n_b, n_shared, jaccard; then one row with
      task_a = task_b = ``"all"``: n_a = n_b = size of the union, n_shared = size of the intersection.
    - ``tasks``: task, n_samples, n_critical, n_selection, n_heldout (critical samples that scored the
      features / that were held out), max_score, n_selected, votes (False for a task without critical
      samples in its selection part, which is left out of the intersection).
    - ``critical``: task, sample of every critical sample.
    - ``heldout_critical``: task, sample of the critical samples held out of the selection (a subset of
      ``critical``; empty when ``heldout_fraction=0``).
    """

    features: pd.DataFrame
    scores: pd.DataFrame
    overlaps: pd.DataFrame
    tasks: pd.DataFrame
    critical: pd.DataFrame
    heldout_critical: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame({"task": [], "sample": pd.Series(dtype="int64")})
    )

    @property
    def feature_ids(self) -> list[int]:
        """The generalization features (the intersection), best first."""
        return [int(k) for k in self.features["feature"]]

    def selected(self, task: str) -> list[int]:
        """The features ``task`` selects."""
        s = self.scores
        return sorted(int(k) for k in s.loc[(s.task == task) & s.selected, "feature"])

    def heldout(self, task: str) -> list[int]:
        """The critical samples of ``task`` that took no part in the selection (score interventions here)."""
        h = self.heldout_critical
        return sorted(int(x) for x in h.loc[h.task == task, "sample"])

    def selection_samples(self, task: str) -> list[int]:
        """The critical samples of ``task`` that scored the features."""
        c = self.critical
        held = set(self.heldout(task))
        return sorted(int(x) for x in c.loc[c.task == task, "sample"] if int(x) not in held)


def split_samples(
    samples: Sequence[int], heldout_fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split ``samples`` into (selection, held-out) by a seeded permutation; both sorted.

    ``round(heldout_fraction * n)`` samples are held out, but each part keeps at least one sample when
    ``0 < heldout_fraction < 1`` and there are two or more.

    Examples
    --------
    >>> split_samples(range(10), 0.5, seed=0) == split_samples(range(10), 0.5, seed=0)
    True
    >>> sel, held = split_samples(range(10), 0.3, seed=1)
    >>> len(sel), len(held), sorted(sel + held) == list(range(10))
    (7, 3, True)
    """
    if not 0 <= heldout_fraction < 1:
        raise FeatdiffError(f"heldout_fraction must be in [0, 1); got {heldout_fraction!r}.")
    samples = [int(x) for x in samples]
    n = len(samples)
    n_held = round(heldout_fraction * n)
    if heldout_fraction > 0 and n >= 2:
        n_held = min(max(n_held, 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = sorted(samples[i] for i in perm[:n_held])
    sel = sorted(samples[i] for i in perm[n_held:])
    return sel, held


def _check_correctness(correctness: pd.DataFrame, reference: str, tuned: str) -> pd.DataFrame:
    if not isinstance(correctness, pd.DataFrame):
        raise FeatdiffError(
            f"correctness must be a DataFrame with columns {CORRECTNESS_COLUMNS}; got {type(correctness).__name__}."
        )
    missing = [c for c in CORRECTNESS_COLUMNS if c not in correctness.columns]
    if missing:
        raise FeatdiffError(f"correctness lacks the columns {missing}; it needs {CORRECTNESS_COLUMNS}.")
    have = sorted(set(correctness["checkpoint"]))
    for role, name in (("reference", reference), ("tuned", tuned)):
        if name not in have:
            raise FeatdiffError(f"The {role} checkpoint {name!r} is not in correctness; it has {have}.")
    wide = correctness[correctness.checkpoint.isin([reference, tuned])].pivot_table(
        index=["task", "sample"], columns="checkpoint", values="correct", aggfunc="first"
    )
    if wide.isna().any().any():
        raise FeatdiffError(
            f"correctness must list the same (task, sample) pairs for {reference!r} and {tuned!r}."
        )
    return wide.astype(bool).reset_index()


def generalization_features(
    codes_ref: Mapping[str, Float[Tensor, "n_samples d_sae"]],
    codes_tuned: Mapping[str, Float[Tensor, "n_samples d_sae"]],
    correctness: pd.DataFrame,
    reference: str = "base",
    tuned: str = "rl",
    fraction: float = 0.2,
    tasks: Sequence[str] | None = None,
    heldout_fraction: float = 0.5,
    seed: int = 0,
    min_critical: int = MIN_CRITICAL,
) -> GeneralizationFeatures:
    """Features that carry ``tuned``'s gains over ``reference`` on every task (see the module docstring).

    ``codes_ref`` / ``codes_tuned``: ``{task: per-sample feature activations}`` of the two models (e.g. from
    ``sample_codes``), row i = sample i of that task. ``correctness``: the lab's per-sample table, columns
    checkpoint, task, sample (row index into the codes), correct. ``tasks``: which tasks vote (default all
    in ``codes_ref``). ``heldout_fraction`` (default 0.5): the share of each task's critical samples held
    out of the selection (split by sample, seeded by ``seed``), on which interventions are to be scored;
    0 selects on every critical sample (in-sample: an effect scored on those samples is biased upward); a
    task with fewer than ``min_critical`` samples in either part gets a warning.

    Examples
    --------
    Two critical samples per task (base wrong, rl right): one selects, the other (sample 0) is held out
    and does not move the selection.

    >>> import pandas as pd, torch
    >>> ref = {"a": torch.zeros(2, 3), "b": torch.zeros(2, 3)}
    >>> tuned = {"a": torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.5, 0.0]]),
    ...          "b": torch.tensor([[0.0, 5.0, 0.0], [1.0, 0.0, 2.0]])}
    >>> rows = [(c, t, s, c == "rl") for c in ("base", "rl") for t in ("a", "b") for s in (0, 1)]
    >>> correctness = pd.DataFrame(rows, columns=["checkpoint", "task", "sample", "correct"])
    >>> res = generalization_features(ref, tuned, correctness, min_critical=1)
    >>> res.selected("a"), res.selected("b"), res.feature_ids, res.heldout("a")
    ([0, 1], [0, 2], [0], [0])
    """
    if not 0 <= fraction <= 1:
        raise FeatdiffError(
            f"The 'fraction' parameter of generalization_features must be in [0, 1]; got {fraction}."
        )
    if not 0 <= heldout_fraction < 1:
        raise FeatdiffError(
            "The 'heldout_fraction' parameter of generalization_features must be in [0, 1); "
            f"got {heldout_fraction!r}."
        )
    if not isinstance(codes_ref, Mapping) or not isinstance(codes_tuned, Mapping) or not codes_ref:
        raise FeatdiffError(
            "codes_ref and codes_tuned must be non-empty dicts {task: (n_samples, d_sae) tensor}."
        )
    tasks = list(codes_ref) if tasks is None else list(tasks)
    for t in tasks:
        if t not in codes_ref or t not in codes_tuned:
            raise FeatdiffError(
                f"Task {t!r} needs codes in both codes_ref and codes_tuned; they have {list(codes_ref)} and {list(codes_tuned)}."
            )
    if ALL_TASKS in tasks:
        raise FeatdiffError(
            f"{ALL_TASKS!r} is reserved for the intersection row of the overlaps; rename that task."
        )
    wide = _check_correctness(correctness, reference, tuned)
    score_rows, task_rows, crit_rows, held_rows = [], [], [], []
    selected: dict[str, set[int]] = {}
    d_sae = None
    for t in tasks:
        r, u = torch.as_tensor(codes_ref[t]).double(), torch.as_tensor(codes_tuned[t]).double()
        if r.shape != u.shape or r.ndim != 2:
            raise FeatdiffError(
                f"Codes of task {t!r} must be two (n_samples, d_sae) tensors of one shape; got {tuple(r.shape)} and {tuple(u.shape)}."
            )
        if d_sae is not None and r.shape[1] != d_sae:
            raise FeatdiffError(
                f"Every task's codes must have the same d_sae; task {t!r} has {r.shape[1]}, not {d_sae}."
            )
        d_sae = r.shape[1]
        w = wide[wide.task == t]
        samples = w["sample"].to_numpy()
        if len(samples) and (samples.min() < 0 or samples.max() >= r.shape[0]):
            raise FeatdiffError(
                f"correctness of task {t!r} names samples outside [0, {r.shape[0]}) (the codes' rows)."
            )
        all_crit = sorted(int(s) for s in w.loc[~w[reference] & w[tuned], "sample"])
        crit, held = split_samples(all_crit, heldout_fraction, seed=seed)
        crit_rows += [(t, s) for s in all_crit]
        held_rows += [(t, s) for s in held]
        if heldout_fraction > 0 and all_crit and min(len(crit), len(held)) < min_critical:
            warn(
                f"generalization_features: task {t!r} has {len(all_crit)} critical samples, {len(crit)} to "
                f"select features and {len(held)} held out (fewer than min_critical={min_critical}); its "
                "selection and any effect scored on it are noisy. Evaluate more samples of this task.",
            )
        if crit:
            score = (u[crit] - r[crit]).mean(0)
        else:
            score = torch.full((d_sae,), float("nan"), dtype=torch.float64)
        max_score = float(score.max()) if crit else float("nan")
        sel = (
            (score > 0) & (score >= fraction * max_score)
            if crit and max_score > 0
            else torch.zeros(d_sae, dtype=torch.bool)
        )
        selected[t] = set(torch.nonzero(sel).flatten().tolist())
        score_rows.append(
            pd.DataFrame(
                {"task": t, "feature": range(d_sae), "score": score.numpy(), "selected": sel.numpy()}
            )
        )
        task_rows.append(
            (t, len(samples), len(all_crit), len(crit), len(held), max_score, len(selected[t]), bool(crit))
        )
    voting = [t for t, *_, votes in task_rows if votes]
    inter = set.intersection(*(selected[t] for t in voting)) if voting else set()
    union = set.union(*(selected[t] for t in voting)) if voting else set()
    scores = pd.concat(score_rows, ignore_index=True).astype(
        {"feature": "int64", "score": "float64", "selected": bool}
    )
    overlaps = [
        (
            a,
            b,
            len(selected[a]),
            len(selected[b]),
            len(selected[a] & selected[b]),
            _jaccard(selected[a], selected[b]),
        )
        for a, b in itertools.combinations(tasks, 2)
    ]
    overlaps.append((ALL_TASKS, ALL_TASKS, len(union), len(union), len(inter), _jaccard(inter, union)))
    vs = scores[scores.task.isin(voting) & scores.feature.isin(sorted(inter))]
    feats = (
        vs.groupby("feature")["score"].agg(min_score="min", mean_score="mean").reset_index()
        if len(vs)
        else pd.DataFrame(
            {
                "feature": pd.Series(dtype="int64"),
                "min_score": pd.Series(dtype="float64"),
                "mean_score": pd.Series(dtype="float64"),
            }
        )
    )
    feats = feats.sort_values(["min_score", "feature"], ascending=[False, True], ignore_index=True)
    return GeneralizationFeatures(
        features=feats,
        scores=scores,
        overlaps=pd.DataFrame(overlaps, columns=OVERLAP_COLUMNS),
        tasks=pd.DataFrame(
            task_rows,
            columns=TASK_COLUMNS,
        ),
        critical=pd.DataFrame(crit_rows, columns=["task", "sample"]).astype({"sample": "int64"}),
        heldout_critical=pd.DataFrame(held_rows, columns=["task", "sample"]).astype({"sample": "int64"}),
    )


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else float("nan")
