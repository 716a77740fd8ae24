"""Build a lab (pretrain, SFT, GRPO, evaluate, save) into a cached folder, and read it back.

A lab folder (``<cache>/lab/<key>``) holds::

    lab.json            config, key, versions, timings, training histories, checkpoint index
    accuracy.csv        accuracy per task of base, rl, sft on the eval split (featdiff.lab.accuracy)
    trajectory.csv      the same for the base and every intermediate checkpoint (smaller eval split)
    correctness.csv     per-sample correctness of base, rl, sft (checkpoint, task, group, sample, correct)
    base/ rl/ sft/      featdiff checkpoint folders (featdiff.models.folder.save_model), carrying the prompts
    rl_checkpoints/ sft_checkpoints/   the intermediate checkpoints, in order (the last equals rl/ or sft/)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from featdiff._version import __version__
from featdiff.core.io import atomic_dir, write_json
from featdiff.core.threads import torch_threads
from featdiff.errors import FeatdiffError, check_choice
from featdiff.lab.config import LAB_VERSION, LabConfig
from featdiff.lab.evaluation import accuracy_table, correctness
from featdiff.lab.suite import task_groups, tasks
from featdiff.lab.task import PAD, pad_right, vocabulary
from featdiff.lab.train import grpo, pretrain, sft
from featdiff.models.folder import load_featdiff_dir, save_model

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

LAB_FILE = "lab.json"
ACCURACY_FILE = "accuracy.csv"
TRAJECTORY_FILE = "trajectory.csv"
CORRECTNESS_FILE = "correctness.csv"
ROLES = ("base", "rl", "sft")
RUNS = {"rl": "rl_checkpoints", "sft": "sft_checkpoints"}


def default_cache_dir() -> Path:
    """``$FEATDIFF_CACHE`` if set, else ``~/.cache/featdiff``."""
    env = os.environ.get("FEATDIFF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "featdiff"


def lab_path(config: LabConfig | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``build`` puts (or finds) the lab of a configuration."""
    config = config or LabConfig()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "lab" / config.key()


def _stored_prompts(config: LabConfig) -> tuple[torch.Tensor, list[str]]:
    store = tasks(config, split="store")
    rows = [ts.sequences() for ts in store.values()]
    names = [name for name, ts in store.items() for _ in range(ts.prompts.shape[0])]
    return pad_right(rows, PAD), names


class _Saver:
    """Saves checkpoints with their prompts and meta, and evaluates them."""

    def __init__(self, root: Path, config: LabConfig, progress: bool):
        self.root, self.config, self.progress = root, config, progress
        self.prompts, self.prompt_tasks = _stored_prompts(config)
        self.check_tasks = tasks(config, split="eval", n=config.tasks.n_eval_checkpoint)
        self.trajectory: list[pd.DataFrame] = []

    def meta(self, role: str, run: str, step: int, index: int, accuracy: dict) -> dict:
        return {
            "lab": self.config.to_dict(),
            "lab_key": self.config.key(),
            "role": role,
            "run": run,
            "step": step,
            "checkpoint_index": index,
            "accuracy": accuracy,
            "pad_token_id": PAD,
            "prompt_format": "prompt followed by its true answer (base format), right-padded with pad_token_id",
            "prompt_tasks": self.prompt_tasks,
        }

    def save(self, model, rel: str, role: str, run: str, step: int, index: int, accuracy: dict) -> None:
        save_model(
            model, self.root / rel, prompts=self.prompts, meta=self.meta(role, run, step, index, accuracy)
        )

    def intermediate(self, run: str):
        def on_checkpoint(model, step: int, index: int) -> None:
            table = accuracy_table(correctness({f"{run}_{index}": model}, self.check_tasks, progress=False))
            table.insert(1, "run", run)
            table.insert(2, "step", step)
            self.trajectory.append(table)
            acc = {k: float(v) for k, v in table.iloc[0].items() if k not in ("checkpoint", "run", "step")}
            self.save(model, f"{RUNS[run]}/{index:02d}_step{step:06d}", run, run, step, index, acc)

        return on_checkpoint


def build(
    config: LabConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    num_threads: int | None = 1,
) -> Path:
    """Train the lab's base, SFT and RL checkpoints, or reuse them from the cache; return the lab folder.

    The folder is ``<cache_dir>/lab/<config.key()>`` (``cache_dir`` defaults to ``$FEATDIFF_CACHE`` or
    ``~/.cache/featdiff``) and is written atomically. Every step is seeded by ``config.seed``: the same
    config gives the same weights. Read it with ``load``, ``accuracy`` and ``checkpoints``.
    Training runs on ``num_threads`` torch threads (restored afterwards): one thread is fastest for these
    tiny models on a shared CPU and keeps the weights independent of the machine's core count; ``None``
    keeps torch's setting.

    Examples
    --------
    >>> import tempfile
    >>> path = build(LabConfig.small(), cache_dir=tempfile.mkdtemp(), progress=False)  # doctest: +SKIP
    >>> base, rl, sft = load(path)  # doctest: +SKIP
    """
    config = config or LabConfig()
    if not isinstance(config, LabConfig):
        raise FeatdiffError(
            f"The 'config' parameter of featdiff.lab.build must be a LabConfig; got {type(config).__name__}."
        )
    path = lab_path(config, cache_dir)
    if (path / LAB_FILE).is_file():
        return path

    timings: dict[str, float] = {}
    with torch_threads(num_threads), atomic_dir(path) as tmp:
        saver = _Saver(tmp, config, progress)
        t = time.perf_counter()
        base, pre_hist = pretrain(config, progress=progress)
        timings["pretrain_s"] = time.perf_counter() - t

        t = time.perf_counter()
        sft_model, sft_hist = sft(base, config, progress=progress, on_checkpoint=saver.intermediate("sft"))
        timings["sft_s"] = time.perf_counter() - t

        t = time.perf_counter()
        rl_model, rl_hist = grpo(base, config, progress=progress, on_checkpoint=saver.intermediate("rl"))
        timings["grpo_s"] = time.perf_counter() - t

        t = time.perf_counter()
        models = {"base": base, "rl": rl_model, "sft": sft_model}
        per_sample = correctness(models, tasks(config, split="eval"), progress=progress)
        table = accuracy_table(per_sample)
        base_row = accuracy_table(correctness({"base": base}, saver.check_tasks, progress=False))
        base_row.insert(1, "run", "base")
        base_row.insert(2, "step", 0)
        trajectory = pd.concat([base_row, *saver.trajectory], ignore_index=True)
        timings["evaluate_s"] = time.perf_counter() - t

        pre_steps = pre_hist[-1]["step"] if pre_hist else 0
        steps = {"base": pre_steps, "rl": rl_hist[-1]["step"], "sft": sft_hist[-1]["step"]}
        for role, model in models.items():
            acc = {k: float(v) for k, v in table.set_index("checkpoint").loc[role].items()}
            saver.save(
                model, role, role, role, steps[role], config.n_checkpoints if role != "base" else 0, acc
            )
        table.to_csv(tmp / ACCURACY_FILE, index=False)
        trajectory.to_csv(tmp / TRAJECTORY_FILE, index=False)
        per_sample.to_csv(tmp / CORRECTNESS_FILE, index=False)
        write_json(
            tmp / LAB_FILE,
            {
                "featdiff_version": __version__,
                "lab_version": LAB_VERSION,
                "key": config.key(),
                "config": config.to_dict(),
                "groups": task_groups(config),
                "timings": timings,
                "history": {"pretrain": pre_hist, "sft": sft_hist, "rl": rl_hist},
                "checkpoints": {
                    run: sorted(p.relative_to(tmp).as_posix() for p in (tmp / sub).iterdir() if p.is_dir())
                    for run, sub in RUNS.items()
                },
            },
        )
    return path


def _lab_info(path: str | os.PathLike) -> dict:
    path = Path(path)
    f = path / LAB_FILE
    if not f.is_file():
        raise FeatdiffError(
            f"{str(path)!r} is not a lab folder (no {LAB_FILE}); make one with featdiff.lab.build(), "
            "which returns its path."
        )
    return json.loads(f.read_text())


def load(
    path: str | os.PathLike, device: str | None = None
) -> tuple[HookedTransformer, HookedTransformer, HookedTransformer]:
    """The lab's ``(base, rl, sft)`` HookedTransformers; each carries ``.featdiff_prompts`` and
    ``.featdiff_meta`` (lab config, role, step, accuracy, pad_token_id), so
    ``compare_checkpoints(*featdiff.lab.load(path))`` needs nothing else; ``.featdiff_vocabulary`` (the
    text of each token id) lets feature cards show readable tokens.
    """

    _lab_info(path)
    models = tuple(load_featdiff_dir(Path(path) / role, device=device) for role in ROLES)
    for m in models:
        m.featdiff_vocabulary = vocabulary()
    return models  # type: ignore[return-value]


def checkpoints(path: str | os.PathLike, run: str = "rl") -> list[Path]:
    """Paths of the intermediate checkpoints of a post-training run (``"rl"`` or ``"sft"``), in order."""
    check_choice("run", run, list(RUNS), where="featdiff.lab.checkpoints")
    info = _lab_info(path)
    return [Path(path) / rel for rel in info["checkpoints"][run]]


def accuracy(path: str | os.PathLike, which: str = "final") -> pd.DataFrame:
    """A lab's stored evaluation.

    ``which="final"``: accuracy per task of base, rl and sft (one row each; columns ``checkpoint``, one per
    task, then the group means ``in_domain``, ``near_domain`` (if any), ``out_of_domain``; ``attrs["groups"]``
    maps each task to its group). ``"trajectory"``: the same (on fewer prompts) for the base and each
    intermediate checkpoint, with ``run`` and ``step`` columns. ``"samples"``: per-sample correctness of base,
    rl and sft (``checkpoint``, ``task``, ``group``, ``sample``, ``correct``).
    """
    check_choice("which", which, ["final", "trajectory", "samples"], where="featdiff.lab.accuracy")
    info = _lab_info(path)
    name = {"final": ACCURACY_FILE, "trajectory": TRAJECTORY_FILE, "samples": CORRECTNESS_FILE}[which]
    df = pd.read_csv(Path(path) / name)
    df.attrs["groups"] = info["groups"]
    return df
