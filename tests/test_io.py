"""Writers never delete what they did not write: a folder holding a user's files is refused unless
overwrite=True; featdiff's own output is replaced atomically."""

import subprocess
import sys

import pytest
import torch

from featdiff.comparison.scoring import compare_dictionaries
from featdiff.comparison.table import Comparison
from featdiff.core.io import MARKER, atomic_dir, is_featdiff_output
from featdiff.dictionaries.formats import save_sae
from featdiff.dictionaries.sae import sae_from_dictionary
from featdiff.errors import FeatdiffError


def _cmp() -> Comparison:
    W = torch.eye(8)
    saes = {"base": sae_from_dictionary(W, k=2), "rl": sae_from_dictionary(W[[1, 0, 2, 3, 4, 5, 6, 7]], k=2)}
    return compare_dictionaries(saes, progress=False)


def test_to_dir_refuses_a_folder_with_user_files_and_keeps_them(tmp_path):
    notes = tmp_path / "out" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("my notes")
    with pytest.raises(FeatdiffError, match="not written by featdiff"):
        _cmp().to_dir(tmp_path / "out", figures=False)
    assert notes.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind
    _cmp().to_dir(tmp_path / "out", figures=False, overwrite=True)
    assert not notes.exists() and (tmp_path / "out" / "summary.csv").is_file()


def test_own_output_and_empty_folders_are_replaced(tmp_path):
    out = _cmp().to_dir(tmp_path / "cmp", figures=False)
    assert (out / MARKER).is_file() and is_featdiff_output(out)
    (out / MARKER).unlink()  # an output of an older featdiff (no marker) is still recognised by its meta.json
    assert is_featdiff_output(out)
    _cmp().to_dir(out, figures=False)
    (tmp_path / "empty").mkdir()
    _cmp().to_dir(tmp_path / "empty", figures=False)
    assert (tmp_path / "empty" / "summary.csv").is_file()


def test_save_sae_and_overwrite_false(tmp_path):
    sae = sae_from_dictionary(torch.eye(4), k=1)
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text("{}")  # someone else's cfg.json, not featdiff's
    with pytest.raises(FeatdiffError, match="not written by featdiff"):
        save_sae(sae, tmp_path / "sae")
    save_sae(sae, tmp_path / "mine")
    save_sae(sae, tmp_path / "mine")  # replaces its own output
    with pytest.raises(FeatdiffError, match="exists"):
        save_sae(sae, tmp_path / "mine", overwrite=False)


def test_an_error_inside_leaves_the_old_folder_untouched(tmp_path):
    out = _cmp().to_dir(tmp_path / "cmp", figures=False)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]


def test_cli_refuses_a_user_folder_before_doing_any_work(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "thesis.tex").write_text("chapter 1")
    out = subprocess.run(
        [sys.executable, "-m", "featdiff", "compare", "a", "b", "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "not written by featdiff" in out.stderr and "--overwrite" in out.stderr
    assert (tmp_path / "report" / "thesis.tex").read_text() == "chapter 1"
