"""The ``featdiff`` command: ``featdiff demo`` (the lab, end to end) and ``featdiff compare`` (your checkpoints).

Both write one report folder atomically (``featdiff.core.io.atomic_dir``): the Comparison (summary.csv,
features.parquet, meta.json, figures/) plus a self-contained report.html. Bad input (a ``FeatdiffError``)
prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import featdiff as fd
from featdiff._version import __version__
from featdiff.analyses.crosscoder_view.config import CrosscoderViewConfig
from featdiff.analyses.crosscoder_view.run import crosscoder_view
from featdiff.cli_args import FLAGS, PHRASES, Parser, device_arg, fraction_arg, positive_int_arg
from featdiff.core.io import atomic_dir, check_replaceable, write_json
from featdiff.errors import FeatdiffError, FeatdiffWarning, group_messages
from featdiff.report.figures import figure_png, ordered_accuracy, plot_accuracy
from featdiff.report.html import findings, interval_level, key_table_text, write_html_report

DEFAULT_OUT = "featdiff-report"
# SAE training steps of the demo's compare_checkpoints (the library default, 1M samples, is sized for real
# models and takes minutes on the lab): 300, where the lab's SAE losses settle to about the 2 % tolerance of
# the training diagnostic (150 left them falling by 2.6-3.1 %: README, "The lab").
DEMO_SAE_STEPS = 300
SMALL_SAE_STEPS = 10
# Measured by benchmarks/bench_demo.py on 2 shared CPU cores (see benchmarks/README.md).
DEMO_TIME_COLD = "about 2.5 minutes (up to 4 on a busy machine)"
DEMO_TIME_WARM = "about 65 seconds"

DEMO_DESCRIPTION = f"""\
Run featdiff end to end on its built-in lab and write a report.

The lab is a tiny transformer pretrained on synthetic list tasks (sort, copy, max, ...), then post-trained
on one task two ways: SFT (supervised fine-tuning) and RL (GRPO). The demo evaluates base, SFT and RL
in-domain, near-domain and out-of-domain, trains one sparse autoencoder per checkpoint on their activations,
aligns the dictionaries to the base's and scores which features were reused, recombined or are novel, then
(unless --no-crosscoder) runs the crosscoder view (MAS/NRN, feature evolution, generalization features and
interventions). It prints the key table (accuracy, then reuse, recombination, novelty, drift, transfer_fve
per checkpoint, each beside its raw value, its base-vs-base floor and its interval), what the run measured
in words, any warnings, and writes:

  OUT/report.html        everything in one self-contained file (open it in a browser)
  OUT/accuracy.csv       accuracy per task and task group of base, sft, rl (in [0, 1])
  OUT/summary.csv        one row per post-trained checkpoint (the Comparison summary)
  OUT/features.parquet   one row per (checkpoint, feature); OUT/meta.json: hook, tokens, seeds, versions
  OUT/figures/*.png      comparison, accuracy and crosscoder-view figures
  OUT/crosscoder/*.csv   the crosscoder view's tables

OUT is --out (default ./{DEFAULT_OUT}); it is replaced atomically when it is empty or an earlier featdiff
output; a folder holding anything else is left alone (the run stops at once) unless --overwrite. The trained lab is cached in
--cache-dir (default $FEATDIFF_CACHE, else ~/.cache/featdiff) under lab/<config hash>, so later runs skip
training.

Time on a 2-core CPU: {DEMO_TIME_COLD} the first time (training the lab), {DEMO_TIME_WARM} once the lab is
cached; --small takes seconds. No network access is needed.
"""

COMPARE_DESCRIPTION = """\
Compare your own checkpoints: a base and any number of checkpoints post-trained from it, each anything
featdiff.load_model takes (a folder written by featdiff.save_model, a local Hugging Face folder, or a hub
name where a network exists):

  featdiff compare base=PATH rl=PATH sft=PATH dpo=PATH ... --text corpus.jsonl --out report/

Each checkpoint is NAME=PATH (NAME: letters, digits, _ . -); a bare PATH keeps its place's name (the
first is base, the second rl, the third sft). The reference is the one named base (else the first).
Collects their activations on the same tokens at --hook (default: the middle layer's residual stream),
trains one SAE per checkpoint (or one crosscoder, --method crosscoder; or the base's SAE fine-tuned on
each checkpoint, --method finetune), aligns them to the base's and writes the Comparison folder (summary.csv, features.parquet, meta.json, figures/) plus report.html to --out.

The data: --text FILE (a .txt, .jsonl or .parquet file, or a Hugging Face datasets save_to_disk folder),
tokenized with the base checkpoint's own tokenizer (every checkpoint must share it), or --tokens FILE
(token ids). Text is packed by default: documents joined by the tokenizer's EOS token and cut into windows
of --context-length tokens (default: the model's n_ctx), each starting with BOS when the tokenizer has one;
--packing truncate makes one window per document. The corpus is read a chunk at a time, up to
--max-tokens. Checkpoints made by featdiff.lab carry their own prompts and need neither.
Under torchrun (python -m torch.distributed.run --nproc_per_node N -m featdiff compare ...) the ranks share
collection and training (gloo on CPUs, NCCL on GPUs, --device cuda: one GPU per rank) and rank 0 writes --out.
"""

# the Python parameters named in featdiff's error messages, and the flags that set them
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
POSITIONAL_NAMES = ("base", "rl", "sft")


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="featdiff",
        description="featdiff: what post-training did to a language model's features, feature by feature.",
    )
    p.add_argument("--version", action="version", version=f"featdiff {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="{demo,compare}")
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    d = sub.add_parser(
        "demo",
        help="train (or load) the lab's base/SFT/RL checkpoints, compare them, write a report",
        description=DEMO_DESCRIPTION,
        formatter_class=fmt,
    )
    d.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default: ./{DEFAULT_OUT})")
    d.add_argument(
        "--cache-dir",
        default=None,
        help="where the trained lab is cached (default: $FEATDIFF_CACHE, else ~/.cache/featdiff)",
    )
    d.add_argument(
        "--small", action="store_true", help="the tests' small lab and settings: seconds, not minutes"
    )
    d.add_argument(
        "--seed", type=int, default=0, help="seed of the lab, the SAEs and the crosscoder (default 0)"
    )
    d.add_argument("--no-crosscoder", action="store_true", help="skip the crosscoder view (faster)")
    d.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    d.add_argument(
        "--quiet", action="store_true", help="no progress bars, no table: print only the report path"
    )

    c = sub.add_parser(
        "compare",
        help="compare your own base / RL / SFT checkpoints and write a report",
        description=COMPARE_DESCRIPTION,
        formatter_class=fmt,
    )
    c.add_argument(
        "checkpoints",
        nargs="+",
        metavar="[NAME=]PATH",
        help="two or more checkpoints: NAME=PATH (base=..., rl=..., dpo=...), or a bare PATH named by its place "
        "(base, rl, sft)",
    )
    c.add_argument("--tokens", default=None, help="token ids, shape (batch, seq): a .safetensors or .pt file")
    c.add_argument(
        "--text",
        "--texts",
        dest="text",
        default=None,
        metavar="FILE",
        help="a text corpus: .txt, .jsonl, .parquet, or a datasets save_to_disk folder (instead of --tokens)",
    )
    c.add_argument(
        "--text-field", default=None, help="the JSON key / column of a --text corpus that holds the text (default: text)"
    )
    c.add_argument(
        "--context-length",
        type=positive_int_arg,
        default=None,
        help="tokens per window of --text (default: the checkpoints' n_ctx)",
    )
    c.add_argument(
        "--max-tokens", type=positive_int_arg, default=None, help="read --text up to this many tokens (default: all)"
    )
    c.add_argument(
        "--packing",
        choices=["pack", "truncate"],
        default=None,
        help="pack: documents joined by EOS, cut into full windows (default); truncate: one window per document",
    )
    c.add_argument(
        "--txt-documents",
        choices=["auto", "lines", "paragraphs"],
        default=None,
        help="a .txt corpus's documents: its lines, its blank-line separated paragraphs, or auto (paragraphs "
        "when a blank line separates text; default)",
    )
    c.add_argument(
        "--no-bos",
        action="store_true",
        help="do not start each --text window with the tokenizer's BOS token (default: BOS when it has one)",
    )
    c.add_argument("--out", required=True, help="report folder to write (replaced atomically)")
    c.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    c.add_argument("--hook", default=None, help="TransformerLens hook name (default: middle resid_post)")
    c.add_argument(
        "--method",
        default="saes",
        choices=["saes", "crosscoder", "finetune"],
        help="saes: one SAE per checkpoint; crosscoder: one shared dictionary; finetune: the base SAE fine-tuned "
        "on each checkpoint, aligned by index (default: saes)",
    )
    c.add_argument(
        "--finetune-steps",
        type=positive_int_arg,
        default=None,
        help="with --method finetune: fine-tuning steps of each warm-started SAE (default: featdiff's)",
    )
    c.add_argument("--d-sae", type=positive_int_arg, default=None, help="dictionary size (default: 4 * d_model)")
    c.add_argument("--k", type=positive_int_arg, default=None, help="active latents per token (default: featdiff's)")
    c.add_argument("--n-steps", type=positive_int_arg, default=None, help="training steps of the dictionaries")
    c.add_argument(
        "--widen",
        type=int,
        default=1,
        choices=range(0, 4),
        metavar="{0,1,2,3}",
        help="rounds of the width check that trains every SAE again at twice --d-sae where it is too narrow "
        "(default 1; 0 keeps --d-sae)",
    )
    c.add_argument("--pad-token-id", type=int, default=None, help="padding token to leave out")
    c.add_argument("--eval-fraction", type=fraction_arg, default=0.2, help="share of sequences held out (default 0.2)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default=None, type=device_arg, help="torch device (default: cpu)")
    c.add_argument(
        "--checkpoint-dir",
        default=None,
        help="save progress there; the same command after a kill resumes (docs/long-runs.md)",
    )
    c.add_argument(
        "--activations-dir",
        default=None,
        help="keep the activations on disk there and read them chunk by chunk (sets larger than memory)",
    )
    c.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    p.commands = {"demo": d, "compare": c}  # to name the command in an error about its arguments
    return p


class _Steps:
    """Numbered step lines on stderr ("[2/5] compare ... 12.3 s"), silent when quiet."""

    def __init__(self, n: int, quiet: bool):
        self.n, self.i, self.quiet, self.t = n, 0, quiet, time.perf_counter()

    def __call__(self, text: str) -> None:
        self.i += 1
        self.t = time.perf_counter()
        if not self.quiet:
            print(f"[{self.i}/{self.n}] {text}", file=sys.stderr, flush=True)

    def done(self, text: str = "") -> None:
        if not self.quiet:
            print(f"      done in {time.perf_counter() - self.t:.1f} s{text}", file=sys.stderr, flush=True)


OVERWRITE_HELP = "replace --out even when it holds files featdiff did not write (default: refuse)"


def _write_report(
    out: Path, cmp, accuracy=None, view=None, title: str | None = None, overwrite: bool = False
) -> Path:
    """The report folder, atomically: Comparison files, accuracy.csv, figures/, crosscoder/, report.html."""
    import matplotlib.pyplot as plt  # deferred: matplotlib ~1.5 s to import


    kwargs = {} if title is None else {"title": title}
    with atomic_dir(out, overwrite=overwrite or None) as tmp:
        cmp.to_dir(tmp)  # summary.csv, features.parquet, meta.json, figures/comparison.png
        figs = {"comparison": (tmp / "figures" / "comparison.png").read_bytes()}
        if accuracy is not None:
            ordered_accuracy(accuracy).to_csv(tmp / "accuracy.csv", index=False)
            fig = plot_accuracy(accuracy)
            figs["accuracy"] = figure_png(fig)
            plt.close(fig)
        if view is not None:
            (tmp / "crosscoder").mkdir()
            for name, table in view.tables.items():
                table.to_csv(tmp / "crosscoder" / f"{name}.csv", index=False)
            write_json(tmp / "crosscoder" / "crosscoder_view.json", view.meta)
            for name, fig in view.figures.items():
                figs[f"crosscoder_{name}"] = figure_png(fig)
        for name, png in figs.items():
            (tmp / "figures" / f"{name}.png").write_bytes(png)
        write_html_report(tmp / "report.html", cmp, accuracy=accuracy, view=view, figures=figs, **kwargs)
    return out


def _print_key_table(cmp, accuracy=None, cli_flags: bool = False) -> None:
    """The key numbers as measured: accuracy (if any), then each feature number beside its raw value, its
    base-vs-base floor and its interval, then this run's findings in words and its warnings."""

    with pd.option_context("display.width", 120, "display.max_columns", 20, "display.max_colwidth", 40):
        if accuracy is not None:
            acc = ordered_accuracy(accuracy).set_index("checkpoint")
            print(acc.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
            print()
        print(key_table_text(cmp).to_string())
    level = interval_level(cmp)
    print(
        f"features vs {cmp.meta.get('reference', 'base')}: fractions of scored SAE features (reuse + recombination"
        " + novelty = 1); floor = the same number for a second base SAE (another seed); "
        + (f"[lo, hi] = {level:.0%} interval" if level is not None else "[n/a] = no interval in this run")
        + "; * = the correction hit a bound. drift = 1 - cosine, transfer_fve = variance the base SAE explains."
    )
    print()
    for line in findings(cmp, accuracy):
        print(f"- {line}")
    warns = group_messages(cmp.meta.get("warnings") or [])  # alike ones (rl, sft, ...) as one, counted
    if warns:
        print(f"\n{len(warns)} warning(s) about this run (also in report.html):")
        for w in warns:
            print(f"! {_cli_advice(w) if cli_flags else w}")


@contextlib.contextmanager
def _collected_warnings():
    """Collect featdiff's warnings (their messages, once each) instead of printing them as they come."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FeatdiffWarning)
        messages: list[str] = []
        yield messages
    for w in caught:
        if issubclass(w.category, FeatdiffWarning):
            if str(w.message) not in messages:
                messages.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def demo(args: argparse.Namespace) -> int:
    progress = not args.quiet
    with_view = not args.no_crosscoder
    steps = _Steps(4 + with_view, args.quiet)
    config = fd.lab.LabConfig.small() if args.small else fd.lab.LabConfig()
    config = config.replace(seed=args.seed)
    if args.cache_dir is not None and Path(args.cache_dir).expanduser().exists():
        if not Path(args.cache_dir).expanduser().is_dir():
            raise FeatdiffError(f"--cache-dir {args.cache_dir!r} is a file; give a folder (created if missing).")

    path = fd.lab.lab_path(config, args.cache_dir)
    cached = (path / "lab.json").is_file()
    steps(
        f"lab: {'loading the cached lab' if cached else 'training base, SFT and RL (first run only)'} "
        f"at {path}"
    )
    path = fd.lab.build(config, cache_dir=args.cache_dir, progress=progress)
    accuracy = fd.lab.accuracy(path)
    steps.done()

    steps("compare: activations, one SAE per checkpoint (+ base replicas for the floors), alignment")
    n_steps = SMALL_SAE_STEPS if args.small else DEMO_SAE_STEPS
    with _collected_warnings():  # kept in cmp.meta["warnings"] and printed once, with the summary
        cmp = fd.compare_checkpoints(
            *fd.lab.load(path), seed=args.seed, progress=progress, train_kwargs={"n_steps": n_steps}
        )
    steps.done()

    view = None
    if with_view:
        steps("crosscoder view: MAS/NRN, feature evolution, generalization features, interventions")
        vcfg = CrosscoderViewConfig.small() if args.small else None
        with _collected_warnings() as caught:
            view = crosscoder_view(path, vcfg, progress=progress, seed=args.seed)
        cmp.meta["warnings"] = [*cmp.meta.get("warnings", []), *(f"crosscoder view: {w}" for w in caught)]
        steps.done()

    steps(f"report: writing {args.out}")
    out = _write_report(Path(args.out), cmp, accuracy, view, overwrite=args.overwrite)
    steps.done()
    steps("summary")
    if args.quiet:
        print(out / "report.html")
        return 0
    print()
    _print_key_table(cmp, accuracy)
    print(f"\nreport: {out / 'report.html'}   (tables and figures in {out}/; lab cached in {path})")
    return 0


def _load_tokens(spec: str | None):

    if spec is None:
        return None
    p = Path(spec)
    if not p.is_file():
        raise FeatdiffError(f"The --tokens file {spec!r} does not exist; give a .safetensors or .pt file.")
    if p.suffix == ".safetensors":
        try:
            d = load_file(str(p))
        except SafetensorError as e:  # an empty, truncated or corrupted file
            raise FeatdiffError(f"The --tokens file {spec!r} is not a readable safetensors file: {e}") from None
        t = d["tokens"] if "tokens" in d else (next(iter(d.values())) if len(d) == 1 else None)
        if t is None:
            raise FeatdiffError(
                f"The --tokens file {spec!r} holds tensors {sorted(d)}; name the token ids 'tokens'."
            )
    elif p.suffix in (".pt", ".pth"):
        try:
            t = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - report any unreadable file as bad input
            raise FeatdiffError(f"The --tokens file {spec!r} is not a readable torch file: {e}") from None
        if isinstance(t, dict):
            t = t.get("tokens", next(iter(t.values())) if len(t) == 1 else None)
    else:
        raise FeatdiffError(f"The --tokens file must end in .safetensors or .pt; got {spec!r}.")
    if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.is_floating_point():
        desc = f"a {t.ndim}-d {t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
        raise FeatdiffError(
            f"The --tokens file {spec!r} must hold integer token ids of shape (batch, seq); got {desc}."
        )
    return t.long()


def _checkpoint_specs(args: list[str]) -> dict[str, str]:
    """{name: path} from the command line's checkpoints: NAME=PATH, or a bare PATH named by its place."""
    specs: dict[str, str] = {}
    for i, arg in enumerate(args):
        name, sep, path = arg.partition("=")
        named = sep and not os.path.exists(arg) and "/" not in name and os.sep not in name
        if not named:
            if i >= len(POSITIONAL_NAMES):
                raise FeatdiffError(
                    f"Checkpoint {arg!r} is number {i + 1} and has no name; name every checkpoint after the third: "
                    f"NAME=PATH, e.g. dpo={arg}."
                )
            name, path = POSITIONAL_NAMES[i], arg
        elif not name:
            raise FeatdiffError(f"Checkpoint {arg!r} has an empty name; write NAME=PATH, e.g. dpo{arg}.")
        elif not _NAME.match(name):
            raise FeatdiffError(
                f"Checkpoint name {name!r} (in {arg!r}) may hold only letters, digits, _ . and -; write NAME=PATH."
            )
        if not path:
            raise FeatdiffError(f"Checkpoint {name!r} has no path ({arg!r}); write NAME=PATH.")
        if name in specs:
            raise FeatdiffError(
                f"Two checkpoints are named {name!r} ({name}={specs[name]} and {arg}); give each its own name "
                "(a bare PATH is named by its place: base, rl, sft)."
            )
        specs[name] = path
    if len(specs) < 2:
        raise FeatdiffError(
            "featdiff compare needs the base and at least one post-trained checkpoint: base=PATH rl=PATH ..."
        )
    return specs


def _text_corpus(args: argparse.Namespace):
    """The --text corpus with its options (None without --text; the options without it are an error)."""
    options = {
        "text_field": args.text_field,
        "context_length": args.context_length,
        "max_tokens": args.max_tokens,
        "packing": args.packing,
        "txt_documents": args.txt_documents,
    }
    given = {k: v for k, v in options.items() if v is not None}
    if args.no_bos:
        given["prepend_bos"] = False
    if args.text is None:
        if given:
            flags = [FLAGS.get(k, "--no-bos") for k in given]
            raise FeatdiffError(f"{', '.join(flags)} set(s) how --text is read; give --text FILE too.")
        return None
    if args.tokens is not None:
        raise FeatdiffError("Give --tokens or --text, not both.")
    return fd.TextCorpus(args.text, **given)


def _cli_advice(message: str) -> str:
    """A message (error or warning) with the Python parameters it names (``texts=``, ``eval_fraction``)
    replaced by their flags."""
    for phrase, said in PHRASES.items():
        message = message.replace(phrase, said)
    for param, flag in FLAGS.items():
        message = re.sub(rf"\b{param}=(?=[\w'\"\[-])", f"{flag} ", message)  # context_length=4096
        message = re.sub(rf"\b{param}=", flag, message)  # pass tokens= (...)
        if "_" in param:  # a bare parameter name: "a larger eval_fraction"
            message = re.sub(rf"(?<![\w-]){param}\b", flag, message)
    return message


def compare(args: argparse.Namespace) -> int:

    distributed = fd.distributed.init()  # under torchrun: ranks share the work, rank 0 writes the report
    quiet = args.quiet or not fd.distributed.is_main()
    progress = not quiet
    steps = _Steps(3, quiet)
    specs = _checkpoint_specs(args.checkpoints)
    texts = _text_corpus(args)
    tokens = _load_tokens(args.tokens)
    steps(f"compare: {', '.join(f'{n}={s}' for n, s in specs.items())} ({args.method})")
    train_kwargs = {"n_steps": args.n_steps} if args.n_steps else None
    with _collected_warnings():  # kept in cmp.meta["warnings"] and printed once, with the summary
        cmp = fd.compare_checkpoints(
            specs,
            tokens=tokens,
            texts=texts,
            hook=args.hook,
            method=args.method,
            d_sae=args.d_sae,
            k=args.k,
            seed=args.seed,
            train_kwargs=train_kwargs,
            eval_fraction=args.eval_fraction,
            pad_token_id=args.pad_token_id,
            **({"widen": args.widen} if args.method in ("saes", "finetune") else {}),
            **({"finetune": {"n_steps": args.finetune_steps}} if args.finetune_steps else {}),
            progress=progress,
            device=args.device,
            distributed=distributed,
            checkpoint_dir=args.checkpoint_dir,
            activations_dir=args.activations_dir,
        )
    steps.done()
    if cmp is None:  # a rank other than 0 of a torchrun launch
        return 0
    steps(f"report: writing {args.out}")
    out = _write_report(
        Path(args.out),
        cmp,
        title="featdiff report: " + " vs ".join(specs),
        overwrite=args.overwrite,
    )
    steps.done()
    steps("summary")
    if args.quiet:
        print(out / "report.html")
        return 0
    print()
    _print_key_table(cmp, cli_flags=True)
    print(f"\nreport: {out / 'report.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``featdiff`` console script; returns the exit status (2 on bad input)."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "quiet", False):  # nor the bars transformers draws while it loads a Hugging Face folder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        check_replaceable(Path(args.out), args.overwrite or None)  # before minutes of work, not after
        return {"demo": demo, "compare": compare}[args.command](args)
    except FeatdiffError as e:
        msg = _cli_advice(" ".join(str(e).split()))
        print(f"featdiff {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("featdiff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
