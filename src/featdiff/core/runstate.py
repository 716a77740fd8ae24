"""Resumable runs: a long loop saves its state every few steps in a folder the caller chose, and the same
call resumes from there after a kill.

In ``checkpoint_dir`` a run named e.g. ``train_saes`` owns only ``featdiff-train_saes.json`` (the manifest:
the run's settings, their hash, the last saved step) and ``featdiff-train_saes-step<N>/`` (the state at
step N), plus ``.featdiff-train_saes-*.tmp`` folders while a save is under way. A save writes a temporary
folder, renames it into place, then replaces the manifest (``os.replace``), then removes the older state
folder: a kill at any point leaves the last complete checkpoint readable. Nothing else in the folder is
touched. A manifest written by a run with other settings is refused with a ``FeatdiffError`` that names
the settings that differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from featdiff._version import __version__
from featdiff.core.config import check_int
from featdiff.core.io import MARKER, write_json
from featdiff.errors import FeatdiffError

KILL_ENV = "FEATDIFF_TEST_KILL_AT"
"""Test hook: ``"<run>:<step>"`` makes the process SIGKILL itself once that run has completed that step."""


def settings_hash(settings: dict[str, Any]) -> str:
    """A stable hash of a run's JSON settings (sorted keys)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_fingerprint(acts, names: list[str], n_rows: int = 256) -> str:
    """A hash of the first rows of each named checkpoint of an ActivationSet: tells a resumed run's data
    from other data without reading all of it."""
    first = next(acts.batches(min(n_rows, acts.n_tokens), shuffle=False, names=names))
    h = hashlib.sha256()
    for n in names:
        h.update(first[n].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_hash(x: Tensor) -> str:
    """A hash of a tensor's dtype, shape and values."""
    x = x.detach().cpu().contiguous()
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.view(torch.uint8).numpy().tobytes() if x.dtype == torch.bool else x.numpy().tobytes())
    return h.hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module, n_values: int = 1024) -> str:
    """A hash of a model's parameter names, shapes and first ``n_values`` values of each (cheap for big
    models): tells the checkpoints a resumed collection ran from other ones."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        flat = p.detach().reshape(-1)[:n_values].float().cpu().contiguous()
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(flat.numpy().tobytes())
    return h.hexdigest()[:16]


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    now = json.loads(json.dumps(now, default=str))  # compare in the saved (JSON) form
    keys = sorted(set(saved) | set(now))
    return [
        f"{k} (checkpoint {saved.get(k)!r}, this run {now.get(k)!r})" for k in keys if saved.get(k) != now.get(k)
    ]


class RunCheckpoint:
    """The checkpoints of one resumable run in ``folder`` (see the module's docstring).

    ``settings`` is every input that decides the run's result (its config, seed, data shape and fingerprint);
    ``every`` is the number of steps between two saves (the last step is always saved).

    Examples
    --------
    >>> import tempfile
    >>> ck = RunCheckpoint(tempfile.mkdtemp(), "demo", {"seed": 0}, every=2, total=5)
    >>> ck.resume(lambda d: None)
    0
    >>> for step in range(1, 6):
    ...     ck.step_done(step, lambda d: (d / "x.txt").write_text(str(step)))
    >>> again = RunCheckpoint(ck.folder, "demo", {"seed": 0}, every=2, total=5)
    >>> again.resume(lambda d: print((d / "x.txt").read_text()))
    5
    5
    """

    def __init__(self, folder: str | os.PathLike, run: str, settings: dict[str, Any], every: int, total: int):
        check_int("RunCheckpoint", "checkpoint_every", every)  # steps between saves
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise FeatdiffError(f"checkpoint_dir {self.folder} exists and is not a folder; pick a folder.")
        self.run, self.settings, self.every, self.total = run, settings, every, total
        self.manifest = self.folder / f"featdiff-{run}.json"
        kill = os.environ.get(KILL_ENV, "")
        self._kill_at = int(kill.split(":")[1]) if kill.startswith(f"{run}:") else None

    def _state_dir(self, step: int) -> Path:
        return self.folder / f"featdiff-{self.run}-step{step:09d}"

    def _ours(self) -> list[Path]:
        """Our state folders and leftover temporary folders (never anything else in the folder)."""
        return [
            *self.folder.glob(f"featdiff-{self.run}-step[0-9]*"),
            *self.folder.glob(f".featdiff-{self.run}-*.tmp"),
        ]

    def resume(self, load: Callable[[Path], None]) -> int:
        """Load the last saved state with ``load(state_folder)`` and return its step; 0 with no checkpoint."""
        if not self.manifest.is_file():
            return 0
        try:
            saved = json.loads(self.manifest.read_text())
            step, state = int(saved["step"]), self.folder / saved["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise FeatdiffError(
                f"The checkpoint manifest {self.manifest} is unreadable ({e}); delete it and its "
                f"featdiff-{self.run}-step* folders to start over."
            ) from None
        if saved.get("settings_hash") != settings_hash(self.settings):
            diff = _differences(saved.get("settings", {}), self.settings)
            raise FeatdiffError(
                f"checkpoint_dir {self.folder} holds a {self.run} checkpoint of another run: "
                f"{'; '.join(diff) or 'its settings differ'}. Call {self.run} with the same arguments to resume, "
                f"or pass another checkpoint_dir (or delete {self.manifest.name} and its step folders)."
            )
        if not state.is_dir():
            raise FeatdiffError(
                f"The checkpoint manifest {self.manifest} names {state.name}, which is missing; delete the "
                "manifest to start over."
            )
        try:
            load(state)
        except FeatdiffError:
            raise
        except Exception as e:  # a corrupted or foreign state file
            raise FeatdiffError(
                f"Cannot resume {self.run} from {state}: {type(e).__name__}: {e}. Delete {self.manifest.name} "
                "and its step folders to start over."
            ) from None
        return step

    def step_done(self, step: int, save: Callable[[Path], None]) -> None:
        """Call after each completed step (1-based): saves with ``save(folder)`` every ``every`` steps and
        at the last one."""
        if step % self.every == 0 or step == self.total:
            self.save(step, save)
        self.test_kill(step)

    def test_kill(self, step: int) -> None:
        """The test hook: SIGKILL this process once ``step`` reaches ``FEATDIFF_TEST_KILL_AT``'s step."""
        if self._kill_at is not None and step >= self._kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def save(self, step: int, save: Callable[[Path], None]) -> None:
        """Write the state at ``step`` atomically and make it the one ``resume`` reads."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".featdiff-{self.run}-", suffix=".tmp", dir=self.folder))
        try:
            save(tmp)
            (tmp / MARKER).touch()
            final = self._state_dir(step)
            if final.exists():  # ours: left by a run killed after this rename, before the manifest moved on
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        write_json(
            self.manifest,
            {
                "run": self.run,
                "step": step,
                "state": final.name,
                "settings": self.settings,
                "settings_hash": settings_hash(self.settings),
                "featdiff_version": __version__,
            },
        )
        for p in self._ours():
            if p != final:
                shutil.rmtree(p, ignore_errors=True)

    def clear(self) -> None:
        """Remove this run's manifest and state folders (nothing else)."""
        self.manifest.unlink(missing_ok=True)
        for p in self._ours():
            shutil.rmtree(p, ignore_errors=True)


RUN_STATE = "run_state.pt"


def save_run_state(
    folder: Path, weights: Mapping[str, Mapping[str, Tensor]], state: Mapping[str, Any]
) -> None:
    """One training run's state in ``folder`` (what ``RunCheckpoint.save`` hands its callback): each
    module's weights as ``folder/<name>.safetensors`` and the rest (optimizer states, counters, losses), with
    the torch RNG state, in ``folder/run_state.pt``. ``train_saes`` and ``train_crosscoder`` both save so.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_run_state(Path(d), {"m/w": {"x": torch.ones(2)}}, {"step": 3})
    ...     weights, state = load_run_state(Path(d), ["m/w"])
    >>> weights["m/w"]["x"].tolist(), state
    ([1.0, 1.0], {'step': 3})
    """
    for name, tensors in weights.items():
        path = folder / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    torch.save({**state, "torch_rng": torch.get_rng_state()}, folder / RUN_STATE)


def load_run_state(folder: Path, names: Iterable[str]) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Read what ``save_run_state`` wrote (on the CPU; ``load_state_dict`` copies to the module's device)
    and restore the torch RNG state: ``(weights by name, the rest)``."""
    state = torch.load(folder / RUN_STATE, map_location="cpu")
    weights = {}
    for name in names:
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise FeatdiffError(f"The checkpoint in {folder} holds another run (no {path.name}); pass another checkpoint_dir.")
        weights[name] = load_file(str(path))
    torch.set_rng_state(state.pop("torch_rng").cpu())
    return weights, state


class RowChunks:
    """Resumable collection of rows, one tensor per (model, batch), for ``collect_activations``.

    Every ``every`` batches of a model (and at its last batch) the batches collected since the last save
    are written as one chunk file, and the state folder of the new checkpoint links every earlier chunk
    (hard links, so a save costs one chunk). After a kill, ``rows`` replays the saved batches of each model
    from disk and computes only the rest. Steps count (model, batch) pairs in order.
    """

    def __init__(
        self, folder: str | os.PathLike, run: str, settings: dict[str, Any], every: int, n_models: int,
        n_batches: int,
    ):
        self.ck = RunCheckpoint(folder, run, settings, every, n_models * n_batches)
        self.every, self.n_batches = every, n_batches
        self.state: Path | None = None
        self.done = self.ck.resume(self._check)

    def _check(self, folder: Path) -> None:
        self.state = folder

    def rows(self, m: int, compute: Callable[[int], Iterator[Tensor]]) -> Iterator[Tensor]:
        """Model ``m``'s batches in order: the saved ones read back, then ``compute(first_new_batch)``'s."""
        b_done = min(max(self.done - m * self.n_batches, 0), self.n_batches)
        for c in range(-(-b_done // self.every)):
            chunk = load_file(str(self.state / f"m{m}_c{c:05d}.st"))
            yield from (chunk[k] for k in sorted(chunk))
        pending: dict[str, Tensor] = {}
        for b, x in enumerate(compute(b_done), start=b_done):
            pending[f"b{b:09d}"] = x.contiguous()
            yield x
            if (b + 1) % self.every == 0 or b == self.n_batches - 1:
                self._save(m * self.n_batches + b + 1, f"m{m}_c{b // self.every:05d}.st", pending)
                pending = {}
            self.ck.test_kill(m * self.n_batches + b + 1)

    def _save(self, step: int, name: str, rows: dict[str, Tensor]) -> None:
        def write(tmp: Path) -> None:
            save_file(rows, str(tmp / name))
            for old in [] if self.state is None else self.state.glob("m*_c*.st"):
                try:
                    os.link(old, tmp / old.name)
                except OSError:  # a file system without hard links
                    shutil.copy2(old, tmp / old.name)

        self.ck.save(step, write)
        self.state = self.ck._state_dir(step)

    def clear(self) -> None:
        self.ck.clear()
