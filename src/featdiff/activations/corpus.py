"""Text in: a corpus of documents (a file, a folder or a list of strings) read and tokenized chunk by chunk
with the base checkpoint's own tokenizer, then cut into windows of token ids (docs/cli.md, "Text input").

Formats, by the source: a list of strings (one document each); ``.txt`` (one document per line, or
documents separated by blank lines: ``txt_documents``); ``.jsonl`` / ``.ndjson`` (one JSON object per
line, the text in ``text_field``); ``.parquet`` (the ``text_field`` column); a folder written by
Hugging Face ``datasets``' ``save_to_disk`` (its arrow files, read with pyarrow; ``datasets`` itself is not
needed), or a folder of ``.parquet`` files.

Windows: documents are tokenized without special tokens; ``packing="pack"`` (the default) concatenates
them, separated by the tokenizer's EOS token (its BOS where it has no EOS), and cuts the stream into
windows of ``context_length`` tokens, each starting with the tokenizer's BOS when it has one
(``prepend_bos``); the last, shorter window is kept (padded). ``packing="truncate"`` makes one window per
document, cut at ``context_length``, padded to the longest window of its batch. Padding is masked out of
the activations. ``max_tokens`` caps the tokens in windows (BOS included, padding not): reading stops there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from featdiff.core.config import Config, check_int
from featdiff.errors import FeatdiffError, check_choice

PACKING = ("pack", "truncate")
TXT_DOCUMENTS = ("auto", "lines", "paragraphs")
SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
# text that every pair of checkpoints must encode alike, beside the corpus's first documents
PROBE = "The quick brown fox jumps over the lazy dog. 1234567890 naïve café 東京 🙂\n\tdef f(x): return x**2"
N_PROBE_DOCUMENTS = 8


def _fmt_source(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(str(source))
    return f"<a list of {len(source)} strings>"


@dataclass
class TextCorpus(Config):
    """A text corpus and how it becomes token windows (see the module's docstring for the rules).

    ``source``: a path (``.txt``, ``.jsonl``, ``.parquet``, a ``datasets`` ``save_to_disk`` folder or a
    folder of ``.parquet`` files) or a list of strings. ``text_field``: the JSON key / column holding the
    text. ``context_length``: tokens per window (default: the checkpoints' ``n_ctx``). ``packing``:
    ``"pack"`` or ``"truncate"``. ``prepend_bos``: start every window with the tokenizer's BOS token
    (None: when the tokenizer has one). ``max_tokens``: stop after this many tokens. ``txt_documents``: a
    ``.txt`` file's documents are its ``"lines"``, its ``"paragraphs"`` (blank-line separated), or
    ``"auto"``: paragraphs when a blank line separates two lines of text, else lines.
    ``chunk_documents``: documents read and tokenized at a time (memory holds one chunk, never the corpus).

    Examples
    --------
    >>> corpus = TextCorpus(["the cat sat", "", "hello world"])
    >>> list(corpus.documents())
    ['the cat sat', '', 'hello world']
    >>> TextCorpus("missing.jsonl")
    Traceback (most recent call last):
    ...
    featdiff.errors.FeatdiffError: The text corpus 'missing.jsonl' does not exist; ...
    """

    source: Any
    text_field: str = "text"
    context_length: int | None = None
    packing: str = "pack"
    prepend_bos: bool | None = None
    max_tokens: int | None = None
    txt_documents: str = "auto"
    chunk_documents: int = 1024

    def __post_init__(self) -> None:
        where = "TextCorpus"
        check_choice("packing", self.packing, PACKING, where)
        check_choice("txt_documents", self.txt_documents, TXT_DOCUMENTS, where)
        check_int(where, "context_length", self.context_length, minimum=2, optional=True)
        check_int(where, "max_tokens", self.max_tokens, optional=True)
        check_int(where, "chunk_documents", self.chunk_documents)
        if self.prepend_bos not in (None, True, False):
            raise FeatdiffError(f"prepend_bos must be True, False or None (auto); got {self.prepend_bos!r}.")
        if not isinstance(self.text_field, str) or not self.text_field:
            raise FeatdiffError(
                f"text_field= must name the field that holds the text (e.g. 'text'); got {self.text_field!r}."
            )
        src = self.source
        if isinstance(src, (str, os.PathLike)):
            self.source = src if isinstance(src, str) else os.fspath(src)
            self._check_path()
        elif isinstance(src, Sequence) and not isinstance(src, (bytes, bytearray)):
            bad = next((i for i, t in enumerate(src) if not isinstance(t, str)), None)
            if bad is not None:
                raise FeatdiffError(
                    f"A text corpus given as a list must hold strings (one document each); item {bad} is a "
                    f"{type(src[bad]).__name__}."
                )
            if not src:
                raise FeatdiffError("The text corpus is an empty list; give at least one document.")
        else:
            raise FeatdiffError(
                "A text corpus is a path (.txt, .jsonl, .parquet, a datasets save_to_disk folder) or a list of "
                f"strings; got {type(src).__name__}."
            )

    # ------------------------------------------------------------------------------------------- sources

    def _check_path(self) -> None:
        path = Path(self.source).expanduser()
        shown = repr(str(self.source))
        kinds = "a .txt, .jsonl or .parquet file, or a datasets save_to_disk folder"
        if not path.exists():
            raise FeatdiffError(f"The text corpus {shown} does not exist; give {kinds}.")
        if path.is_dir():
            self._arrow_files()  # raises when the folder is neither kind
        elif path.suffix.lower() not in SUFFIXES:
            raise FeatdiffError(
                f"The text corpus {shown} has an unknown kind ({path.suffix or 'no suffix'}); give {kinds}."
            )
        if not os.access(path, os.R_OK):
            raise FeatdiffError(f"The text corpus {shown} is not readable (permission denied); fix its permissions.")

    @property
    def format(self) -> str:
        """``"list"``, ``"txt"``, ``"jsonl"``, ``"parquet"`` or ``"datasets"``."""
        if not isinstance(self.source, str):
            return "list"
        path = Path(self.source).expanduser()
        if path.is_dir():
            return self._arrow_files()[0]
        return SUFFIXES[path.suffix.lower()]

    def _arrow_files(self) -> tuple[str, list[Path]]:
        """The files of a folder source: ("datasets", arrow files) or ("parquet", parquet files)."""
        path = Path(self.source).expanduser()
        shown = repr(str(self.source))
        if (path / "dataset_dict.json").is_file():  # a DatasetDict: one folder per split
            try:
                splits = list(json.loads((path / "dataset_dict.json").read_text())["splits"])
            except (ValueError, KeyError, TypeError, OSError) as e:
                raise FeatdiffError(f"Cannot read {path / 'dataset_dict.json'} ({e}); save the dataset again.") from None
            if "train" not in splits and len(splits) != 1:
                raise FeatdiffError(
                    f"The datasets folder {shown} holds the splits {splits} and none is 'train'; give one split's "
                    f"folder, e.g. {str(path / splits[0])!r}."
                )
            path = path / ("train" if "train" in splits else splits[0])
        if (path / "state.json").is_file():
            try:
                files = [path / f["filename"] for f in json.loads((path / "state.json").read_text())["_data_files"]]
            except (ValueError, KeyError, TypeError, OSError) as e:
                raise FeatdiffError(f"Cannot read {path / 'state.json'} ({e}); save the dataset again.") from None
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise FeatdiffError(f"The datasets folder {shown} lacks its data files {missing}; save it again.")
            return "datasets", files
        parquet = sorted(path.glob("*.parquet"))
        if parquet:
            return "parquet", parquet
        raise FeatdiffError(
            f"The folder {shown} is neither a datasets save_to_disk folder (state.json) nor a folder of .parquet "
            "files; give a .txt, .jsonl or .parquet file, or such a folder."
        )

    def documents(self) -> Iterator[str]:
        """The documents, one string each, read lazily (a chunk at a time from files)."""
        if not isinstance(self.source, str):
            yield from self.source
            return
        kind = self.format
        path = Path(self.source).expanduser()
        try:
            if kind == "txt":
                yield from self._txt(path)
            elif kind == "jsonl":
                yield from self._jsonl(path)
            elif kind == "parquet":
                files = [path] if path.is_file() else self._arrow_files()[1]
                for f in files:
                    yield from self._parquet(f)
            else:
                for f in self._arrow_files()[1]:
                    yield from self._arrow_stream(f)
        except FeatdiffError:
            raise
        except UnicodeDecodeError as e:
            raise FeatdiffError(f"The text corpus {str(path)!r} is not UTF-8 text ({e}); convert it to UTF-8.") from None
        except Exception as e:  # an unreadable, truncated or corrupted file
            raise FeatdiffError(
                f"Cannot read the text corpus {str(path)!r} ({type(e).__name__}: {e}); check the file."
            ) from None

    def _txt(self, path: Path) -> Iterator[str]:
        mode = self.txt_documents
        if mode == "auto":
            mode = "paragraphs" if _has_blank_separator(path) else "lines"
        with open(path, encoding="utf-8") as f:
            if mode == "lines":
                for line in f:
                    if line.strip():
                        yield line.rstrip("\r\n")
                return
            lines: list[str] = []
            for line in f:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                elif lines:
                    yield "\n".join(lines)
                    lines = []
            if lines:
                yield "\n".join(lines)

    def _missing_field(self, where: str, fields: list[str]) -> FeatdiffError:
        strings = ", ".join(repr(f) for f in fields[:12])
        return FeatdiffError(
            f"{where} has no field {self.text_field!r} (its fields: {strings or 'none'}); pass text_field= naming "
            "the field that holds the text."
        )

    def _jsonl(self, path: Path) -> Iterator[str]:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"Line {lineno} of the text corpus {str(self.source)!r}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise FeatdiffError(f"{where} is not JSON ({e}); give one JSON object per line.") from None
                if not isinstance(record, dict):
                    raise FeatdiffError(
                        f"{where} is a JSON {type(record).__name__}, not an object; give one object per line, "
                        f"e.g. {{\"{self.text_field}\": \"...\"}}."
                    )
                if self.text_field not in record:
                    raise self._missing_field(where, list(record))
                text = record[self.text_field]
                if not isinstance(text, str):
                    raise FeatdiffError(
                        f"{where}: the field {self.text_field!r} holds a {type(text).__name__}, not a string; "
                        "pass text_field= naming the field that holds the text, or fix that line."
                    )
                yield text

    def _column(self, names: list[str], where: str) -> None:
        if self.text_field not in names:
            raise self._missing_field(where, names)

    def _check_strings(self, column, where: str, start: int) -> list[str]:
        import pyarrow as pa

        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise FeatdiffError(
                f"{where}: the column {self.text_field!r} holds {column.type}, not strings; pass text_field= "
                "naming the column that holds the text."
            )
        if column.null_count:
            row = start + next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
            raise FeatdiffError(
                f"{where}: row {row} of the column {self.text_field!r} is null; drop or fill the null rows."
            )
        return column.to_pylist()

    def _parquet(self, path: Path) -> Iterator[str]:
        import pyarrow.parquet as pq  # deferred: only parquet corpora need it

        where = f"The parquet file {str(path)!r}"
        f = pq.ParquetFile(path)
        self._column(f.schema_arrow.names, where)
        start = 0
        for batch in f.iter_batches(batch_size=self.chunk_documents, columns=[self.text_field]):
            yield from self._check_strings(batch.column(0), where, start)
            start += batch.num_rows

    def _arrow_stream(self, path: Path) -> Iterator[str]:
        import pyarrow as pa  # deferred: only datasets folders need it

        where = f"The datasets file {str(path)!r}"
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            self._column(reader.schema.names, where)
            start = 0
            for batch in reader:
                column = batch.column(batch.schema.get_field_index(self.text_field))
                for i in range(0, batch.num_rows, self.chunk_documents):
                    yield from self._check_strings(column.slice(i, self.chunk_documents), where, start + i)
                start += batch.num_rows

    # ------------------------------------------------------------------------------------------- windows

    def windows(
        self, tokenizer, context_length: int | None = None, batch_size: int = 32, stats: dict | None = None
    ) -> Iterator[tuple[Int[Tensor, "batch seq"], Bool[Tensor, "batch seq"]]]:
        """Batches of ``batch_size`` windows: token ids (right-padded with 0) and a mask of the real
        positions. ``tokenizer``: a Hugging Face tokenizer, or a model that carries one (``.tokenizer``).
        ``context_length`` is used where the corpus sets none. ``stats`` (a dict) is filled with the counts
        (documents, empty documents, windows, tokens, documents cut by truncation, whether ``max_tokens``
        stopped the reading).

        Examples
        --------
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> from transformers import PreTrainedTokenizerFast
        >>> words = ["<pad>", "<bos>", "<eos>", "<unk>", "the", "cat", "sat", "hello", "world"]
        >>> tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")
        >>> corpus = TextCorpus(["the cat sat", "hello world"], context_length=4)
        >>> ids, mask = next(corpus.windows(tokenizer))
        >>> ids.tolist()  # BOS, then the documents separated by EOS, 4 tokens a window
        [[1, 4, 5, 6], [1, 2, 7, 8]]
        >>> corpus = TextCorpus(["the cat sat", "hello"], context_length=3, packing="truncate")
        >>> ids, mask = next(corpus.windows(tokenizer))
        >>> ids.tolist(), mask.tolist()  # one window per document, cut at 3, padded
        ([[1, 4, 5], [1, 7, 0]], [[True, True, True], [True, True, False]])
        """
        check_int("TextCorpus.windows", "batch_size", batch_size)
        rows: list[list[int]] = []
        for window in self._windows(tokenizer, context_length, {} if stats is None else stats):
            rows.append(window)
            if len(rows) == batch_size:
                yield _pad(rows)
                rows = []
        if rows:
            yield _pad(rows)

    def _windows(self, tokenizer, context_length: int | None, stats: dict) -> Iterator[list[int]]:
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        if tokenizer is None or not callable(tokenizer):
            raise FeatdiffError("TextCorpus.windows needs a Hugging Face tokenizer (or a model that has one).")
        length = self.context_length or context_length
        if length is None:
            raise FeatdiffError("TextCorpus.windows needs a context length: set context_length=.")
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        if self.prepend_bos and bos is None:
            raise FeatdiffError(
                "prepend_bos=True, but the tokenizer has no BOS token; pass prepend_bos=None (BOS where the "
                "tokenizer has one) or False."
            )
        prefix = [bos] if bos is not None and self.prepend_bos is not False else []
        sep = eos if eos is not None else bos
        body = length - len(prefix)
        budget = self.max_tokens if self.max_tokens is not None else float("inf")
        stats.update(
            n_documents=0, n_empty_documents=0, n_windows=0, n_tokens=0, n_truncated_documents=0,
            n_tokens_cut=0, stopped_at_max_tokens=False, context_length=length, packing=self.packing,
            bos_token_id=prefix[0] if prefix else None, separator_token_id=sep if self.packing == "pack" else None,
        )  # fmt: skip

        def emit(window: list[int]) -> list[int]:
            stats["n_windows"] += 1
            stats["n_tokens"] += len(window)
            return window

        buf: list[int] = []  # the packed stream not yet in a window
        for ids in self._token_ids(tokenizer, stats):
            if self.packing == "truncate":
                if len(ids) > body:
                    stats["n_truncated_documents"] += 1
                    stats["n_tokens_cut"] += len(ids) - body
                window = (prefix + ids[:body])[: int(min(length, budget - stats["n_tokens"]))]
                yield emit(window)
            else:
                if stats["n_documents"] > 1 and sep is not None:  # a separator before every document but the first
                    buf.append(sep)
                buf.extend(ids)
                start = 0
                while len(buf) - start >= body:
                    yield emit((prefix + buf[start : start + body])[: int(min(length, budget - stats["n_tokens"]))])
                    start += body
                    if stats["n_tokens"] >= budget:
                        break
                del buf[:start]
            if stats["n_tokens"] >= budget:
                stats["stopped_at_max_tokens"] = True
                return
        if buf:
            yield emit((prefix + buf)[: int(min(length, budget - stats["n_tokens"]))])
        if stats["n_windows"] == 0:
            what = (
                f"all {stats['n_empty_documents']} of its documents are empty"
                if stats["n_empty_documents"]
                else "it holds no documents"
            )
            raise FeatdiffError(
                f"The text corpus {_fmt_source(self.source)} holds no text ({what}); give a corpus with text"
                + (f" in the field {self.text_field!r}." if self.format not in ("txt", "list") else ".")
            )

    def _token_ids(self, tokenizer, stats: dict) -> Iterator[list[int]]:
        """Each non-empty document's token ids (no special tokens), tokenized a chunk at a time."""
        chunk: list[str] = []

        def encode(docs: list[str]) -> list[list[int]]:
            return tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]

        for doc in self.documents():
            if not doc.strip():
                stats["n_empty_documents"] += 1
                continue
            chunk.append(doc)
            if len(chunk) == self.chunk_documents:
                for ids in encode(chunk):
                    stats["n_documents"] += 1
                    yield list(ids)
                chunk = []
        if chunk:
            for ids in encode(chunk):
                stats["n_documents"] += 1
                yield list(ids)

    def describe(self) -> dict:
        """The corpus's settings as JSON values (for ``meta.json``)."""
        out = self.to_dict()
        out["source"] = str(self.source) if isinstance(self.source, str) else f"<list of {len(self.source)} strings>"
        out["format"] = self.format
        return out


def _has_blank_separator(path: Path) -> bool:
    """Whether a blank line separates two lines of text (read line by line, stops at the first)."""
    seen_text = blank_after_text = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                if blank_after_text:
                    return True
                seen_text = True
            elif seen_text:
                blank_after_text = True
    return False


def _pad(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ids, mask


def as_corpus(texts) -> TextCorpus:
    """``texts`` as a TextCorpus: a TextCorpus as is, a path or a list of strings with the defaults."""
    return texts if isinstance(texts, TextCorpus) else TextCorpus(texts)


