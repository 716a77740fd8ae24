"""Reading a text corpus chunk by chunk: peak memory and throughput of ``TextCorpus.windows``.

Writes a synthetic .jsonl corpus of about ``--mb`` MB (random words), trains a byte-level BPE tokenizer
(8k tokens) on its first documents, then, each in a fresh interpreter, reads and tokenizes the whole
corpus into packed windows of 1,024 tokens: with the default chunks (1,024 documents at a time) and with
one chunk holding every document (what reading the corpus whole costs). Prints the peak resident memory
(ru_maxrss) of each, the interpreter's after imports alone, and the tokens per second.

    python benchmarks/bench_corpus.py --mb 200
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READ = """
import resource, sys, time
from transformers import PreTrainedTokenizerFast
import featdiff as fd
tok = PreTrainedTokenizerFast(tokenizer_file=sys.argv[1], bos_token="<bos>", eos_token="<eos>")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
corpus = fd.TextCorpus(sys.argv[2], context_length=1024, chunk_documents=int(sys.argv[3]))
t, n = time.perf_counter(), 0
for ids, mask in corpus.windows(tok, batch_size=32):
    n += int(mask.sum())
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, dt, base / 1024, peak / 1024)
"""


def write_corpus(path: Path, mb: float, seed: int = 0) -> int:
    g = random.Random(seed)
    vocab = ["".join(g.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(g.randint(2, 9))) for _ in range(5000)]
    n, size = 0, 0
    with open(path, "w") as f:
        while size < mb * 1e6:
            line = json.dumps({"text": " ".join(g.choices(vocab, k=g.randint(50, 400)))}) + "\n"
            f.write(line)
            size += len(line)
            n += 1
    return n


def train_tokenizer(corpus: Path, out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=8000, special_tokens=["<bos>", "<eos>"])
    with open(corpus) as f:
        docs = [json.loads(next(f))["text"] for _ in range(2000)]
    tok.train_from_iterator(docs, trainer)
    tok.save(str(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="corpus size in MB (default 200)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus, tok = Path(tmp) / "corpus.jsonl", Path(tmp) / "tokenizer.json"
        t = time.perf_counter()
        n_docs = write_corpus(corpus, args.mb)
        train_tokenizer(corpus, tok)
        print(f"corpus: {corpus.stat().st_size / 1e6:.0f} MB, {n_docs:,} documents ({time.perf_counter() - t:.0f} s to write)")
        for label, chunk in (("chunks of 1,024 documents (default)", 1024), ("one chunk: the whole corpus", 10**9)):
            out = subprocess.run([sys.executable, "-c", READ, str(tok), str(corpus), str(chunk)],
                                 capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
            n, dt, base, peak = int(out[0]), float(out[1]), float(out[2]), float(out[3])
            print(f"{label}: {n:,} tokens in {dt:.1f} s ({n / dt / 1e6:.2f} M tokens/s); peak RSS {peak:,.0f} MB "
                  f"(after imports {base:,.0f} MB, +{peak - base:,.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
