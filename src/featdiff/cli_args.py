"""The command line's argument types and wording: a one-line argparse error, checked option values, and the
flags that name the Python parameters a message mentions."""

from __future__ import annotations

import argparse
import re

import torch

FLAGS = {
    "texts": "--text",
    "tokens": "--tokens",
    "text_field": "--text-field",
    "context_length": "--context-length",
    "max_tokens": "--max-tokens",
    "packing": "--packing",
    "txt_documents": "--txt-documents",
    "checkpoint_dir": "--checkpoint-dir",
    "activations_dir": "--activations-dir",
    "pad_token_id": "--pad-token-id",
    "d_sae": "--d-sae",
    "n_steps": "--n-steps",
    "widen": "--widen",
    "eval_fraction": "--eval-fraction",
}
# Python advice in a message the command line prints, and what to say there instead
PHRASES = {
    "raise n_samples or n_steps": "raise --n-steps",
    "raise n_samples, now": "raise --n-steps (training rows now",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (``featdiff compare: error: ...``) and status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see {self.prog} --help\n")


def device_arg(spec: str) -> str:
    """--device: a torch device string, checked at once (one line, not a traceback, when it is not one)."""
    try:
        torch.device(spec)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {spec!r} (try cpu, cuda, cuda:1, mps)") from None
    return spec


def fraction_arg(text: str) -> float:
    """--eval-fraction: a number in (0, 1)."""
    value = float(text) if re.fullmatch(r"\s*[0-9.eE+-]+\s*", text) else float("nan")
    if not 0 < value < 1:  # (NaN too: not a number)
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive); got {value}")
    return value


def positive_int_arg(text: str) -> int:
    """--k, --d-sae, --n-steps: a positive integer, checked before minutes of work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value
