"""CrosscoderView: what crosscoder_view found (the Comparison, tidy tables, figures, meta) and its folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from featdiff._version import __version__
from featdiff.analyses.crosscoder_view.config import (
    FIGURES_DIR,
    META_FILE,
)
from featdiff.core.io import atomic_dir, write_json


@dataclass
class CrosscoderView:
    """What ``crosscoder_view`` found: the Comparison, tidy tables, matplotlib figures and meta.

    ``tables`` (stable keys; every table is a tidy DataFrame with the columns below, key columns first):

    - ``"mas"``: one row per crosscoder feature: feature, base, rl, sft (MAS per checkpoint, rows sum to
      1), dominant, category (base | rl | sft | shared | dead), dead (bool, never fired on the tokens).
    - ``"mas_categories"``: view (``"base+rl+sft"``: MAS categories; ``"rl vs base"``, ``"sft vs base"``:
      NRN categories base / shared / the checkpoint), category, n_features, fraction (of live features;
      sums to 1 per view).
    - ``"nrn"``: checkpoint (rl | sft), feature, nrn (n^T / (n^base + n^T), in [0, 1]; NaN if dead), dead.
    - ``"evolution"``: run (rl | sft), step (training step), checkpoint_index (1..n), overlap_prev,
      overlap_final (see ``featdiff.analyses.evolution``), noise_floor (overlap of the final checkpoint's
      set with
      that of a crosscoder trained with another seed on the same activations; NaN for
      ``evolution="shared"``). The per-checkpoint crosscoders share one seed, hence one initialisation, so
      overlaps between checkpoints are partly inherited from it; the noise floor says how reproducible a
      top-k set is at all. Empty when ``evolution="none"``.
    - ``"generalization_features"``: feature, min_score, mean_score (best first).
    - ``"generalization_overlaps"``: task_a, task_b, n_a, n_b, n_shared, jaccard (last row: ``all``).
    - ``"generalization_tasks"``: task, group, base_accuracy, rl_accuracy, n_samples, n_critical,
      n_selection, n_heldout (critical samples that selected the features / held out), max_score,
      n_selected, votes.
    - ``"interventions"``: edit (``ablate_in_rl`` | ``amplify_in_base``), model, mode, alpha, n_features
      (the number of selected features edited), condition (none | edit | random: the mean of the
      controls), subset (critical: held-out critical samples | full), task, group, n_selection (critical
      samples of the task that selected the features; never among the scored ones), accuracy (in [0, 1]),
      n (scored samples), n_controls, p_min (1 / (1 + n_controls): the smallest p the controls allow),
      p_value (on the edit rows: empirical, one-sided in the expected direction: lower accuracy for
      ablate, higher for amplify), p_holm (Holm-adjusted over the subset's tests), n_tests (that family's
      size), few_samples (n < ``min_critical`` on a critical subset).
    - ``"crosscoder_eval"``: checkpoint, fve, mse, l0, dead_fraction.

    ``figures``: ``"mas"`` (ternary plot of the features' MAS and stacked bars of the categories per
    checkpoint), ``"nrn"`` (NRN histograms of rl and sft vs base), ``"evolution"`` (overlap with the
    previous and the final checkpoint), ``"interventions"`` (accuracy per condition). A figure is absent
    when its table is empty.

    ``meta``: hook, token count, seed, config, lab key, timings (seconds per stage), the generalization
    tasks used, ``intervention_samples`` (per task, the eval-split indices of the critical samples that
    selected the features and of the held-out critical and full samples that scored the edits; the first
    never meets the other two) and ``notes`` (why a table is empty, e.g. no critical samples; one sentence
    per edit and task with the held-out effect, n and p).

    ``to_dir(path)`` writes ``<key>.csv`` per table, ``figures/<key>.png`` per figure and
    ``crosscoder_view.json`` (meta).
    """

    comparison: Any = field(repr=False)
    tables: dict[str, pd.DataFrame] = field(repr=False)
    figures: dict[str, Any] = field(repr=False)
    meta: dict = field(default_factory=dict, repr=False)
    crosscoder: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        t = self.tables.get("mas_categories")
        lines = [f"CrosscoderView(hook={self.meta.get('hook')!r}, n_tokens={self.meta.get('n_tokens')})"]
        if t is not None and len(t):
            lines.append(t.round(3).to_string(index=False))
        lines.append(f"generalization features: {self.meta.get('n_generalization_features')}")
        for note in self.meta.get("notes", []):
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def to_dir(self, path: str | os.PathLike, atomic: bool = True, dpi: int = 110) -> Path:
        """Write the tables (``<key>.csv``), figures (``figures/<key>.png``) and ``crosscoder_view.json``.

        ``atomic=True`` (default) builds the folder beside ``path`` and renames it into place (replacing
        an existing ``path``); ``atomic=False`` writes into ``path`` (created if needed, other files left
        alone), each file through a temporary name, for a caller that assembles a larger report folder.
        """

        def write(root: Path) -> None:
            for name, table in self.tables.items():
                tmp = root / f".{name}.csv.tmp"
                table.to_csv(tmp, index=False)
                tmp.replace(root / f"{name}.csv")
            if self.figures:
                (root / FIGURES_DIR).mkdir(exist_ok=True)
            for name, fig in self.figures.items():
                target = root / FIGURES_DIR / f"{name}.png"
                tmp = target.with_name(f".{name}.tmp.png")
                fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
                tmp.replace(target)
            write_json(root / META_FILE, {**self.meta, "featdiff_version": __version__})

        path = Path(path)
        if atomic:
            with atomic_dir(path) as tmp:
                write(tmp)
        else:
            path.mkdir(parents=True, exist_ok=True)
            write(path)
        return path
