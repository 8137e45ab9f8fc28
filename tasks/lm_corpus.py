"""Running text for language modelling: a built-in English corpus and a user's own files.

* :func:`python_docs_sentences`: English prose of the Python documentation on every machine that
  has Python — the docstrings of the standard library (read with ``ast``, never imported) and
  the reference manual's topics (``pydoc_data.topics``, what ``help("if")`` shows) — cleaned of
  code (doctest lines, indented blocks, identifiers) and normalised the way Mikolov's Penn
  Treebank is (Mikolov et al. 2010): lower case, punctuation removed, every number ``N``, one
  sentence per line. Documents (one docstring or topic) go to train / valid / test by a hash of
  their text (85 / 7.5 / 7.5 %, about PTB's proportions), and a sentence already seen in an
  earlier document is dropped, so no sentence is in two splits.
* :func:`read_text_splits`: ``train``/``valid``/``test`` text files of one sentence per line, as
  PTB (``ptb.train.txt``) and WikiText-2 (``wiki.train.tokens``) are distributed, taken as they
  are (``<unk>`` stays the unknown token). Empty, binary and unbroken files are refused with a
  :class:`~lstm_harness.tasks.data.DataError` that names the file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from lstm_harness.tasks.corpora import _docstrings, _python_files, _root_dirs
from lstm_harness.tasks.data import SPLITS, DataError, _unit, cache_dir, stable_hash

CORPUS_VERSION = 2
SPLIT_FRACTIONS = (0.85, 0.075)  # train, valid; test the rest
MIN_WORDS = 4  # shorter sentences (headings, fragments) are dropped
# file names of the three splits in a folder, tried in this order
SPLIT_FILE_NAMES = {
    "train": ("train.txt", "ptb.train.txt", "wiki.train.tokens", "train.tokens"),
    "valid": ("valid.txt", "ptb.valid.txt", "wiki.valid.tokens", "valid.tokens",
              "validation.txt", "dev.txt"),
    "test": ("test.txt", "ptb.test.txt", "wiki.test.tokens", "test.tokens"),
}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
CODE_CHARS = re.compile(r"[_()\[\]{}=<>/\\|`*#@$%^~+]")
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
NUMBER = re.compile(r"[0-9][0-9.,]*")


# --- the built-in corpus ----------------------------------------------------------------------

def normalise_sentence(text: str) -> str:
    """PTB-style normalisation of one sentence: each whitespace token loses its leading and
    trailing punctuation; tokens that then look like code (holding ``_ ( ) [ ] = < > /`` and
    the like, or an inner dot as in ``os.path``) are dropped, numbers become ``N``, other tokens
    must be words
    (letters, one inner apostrophe); lower case; ``""`` when fewer than MIN_WORDS remain or
    more than half are numbers (rows of tables)."""
    words = []
    for raw in text.split():
        token = raw.strip(".,;:!?\"'()[]").lower()
        if not token or "." in token or CODE_CHARS.search(token):
            continue
        if NUMBER.fullmatch(token):
            words.append("N")
        elif WORD.fullmatch(token):
            words.append(token)
    if len(words) < MIN_WORDS or 2 * words.count("N") > len(words):  # fragments, tables
        return ""
    return " ".join(words)


def prose_paragraphs(doc: str) -> list[str]:
    """The prose paragraphs of a cleaned docstring or manual page, each joined to one line:
    paragraphs are split at blank lines; doctest lines (``>>>``, ``...``), lines indented
    deeper than the paragraph's first line (code, tables, parameter lists) and lines with
    fewer letters than other characters are left out."""
    paragraphs, current, indent = [], [], None
    for line in [*doc.splitlines(), ""]:
        stripped = line.strip()
        if not stripped:
            if current:
                paragraphs.append(" ".join(current))
            current, indent = [], None
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        letters = sum(c.isalpha() for c in stripped)
        if (stripped.startswith((">>>", "...")) or depth > indent
                or letters < len(stripped) - letters):
            continue
        current.append(stripped)
    return paragraphs


def _documents(roots: str) -> list[str]:
    docs = [doc for path in _python_files(_root_dirs(roots)) for _, doc in _docstrings(path)]
    from pydoc_data.topics import topics  # the reference manual's text (standard library)

    docs += [topics[name] for name in sorted(topics)]
    return docs


def split_of(document: str) -> str:
    """train / valid / test of a document, by a hash of its text."""
    u = _unit(document, "lm-corpus")
    train, valid = SPLIT_FRACTIONS
    return "train" if u < train else "valid" if u < train + valid else "test"


def python_docs_sentences(roots: str = "stdlib") -> dict[str, list[str]]:
    """Normalised sentences (one string of space-separated words each) per split, from the
    docstrings under ``roots`` (``stdlib`` or ``all``: site-packages too) and the reference
    manual's topics. Cached under :func:`~lstm_harness.tasks.data.cache_dir`, keyed by the
    roots, the Python version and the corpus version."""
    slot = stable_hash(CORPUS_VERSION, roots, sys.version)
    cached = cache_dir() / f"lm-python-docs-{slot[:16]}.json"
    try:
        data = json.loads(cached.read_text("utf-8"))
        if set(data) == set(SPLITS):
            return data
    except (OSError, ValueError):
        pass
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    for doc in _documents(roots):
        target = splits[split_of(doc)]
        for paragraph in prose_paragraphs(doc):
            for sentence in SENTENCE_END.split(paragraph):
                words = normalise_sentence(sentence)
                if words and words not in seen:
                    seen.add(words)
                    target.append(words)
    if not splits["train"]:
        raise DataError(f"python_docs: no prose found in the docstrings under {roots!r}; "
                        "use `source: files` with your own text files instead")
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(splits), "utf-8")
    os.replace(tmp, cached)
    return splits


# --- a user's files ---------------------------------------------------------------------------

def split_paths(files: str | dict[str, str]) -> dict[str, Path]:
    """The three split files: a folder holding them under one of the usual names (train.txt,
    ptb.train.txt, wiki.train.tokens, ...), or a mapping ``{train: ..., valid: ..., test: ...}``."""
    if isinstance(files, dict):
        missing = [s for s in SPLITS if s not in files]
        extra = [k for k in files if k not in SPLITS]
        if missing or extra:
            raise DataError(f"files: name the three splits train, valid, test (missing: "
                            f"{', '.join(missing) or 'none'}; unknown: "
                            f"{', '.join(extra) or 'none'})")
        return {s: Path(files[s]) for s in SPLITS}
    folder = Path(files)
    if not folder.is_dir():
        if folder.exists():
            raise DataError(f"{folder}: a folder holding train/valid/test text files, or a "
                            "mapping {train: ..., valid: ..., test: ...}, is expected")
        raise DataError(f"{folder}: folder not found")
    paths = {}
    for split, names in SPLIT_FILE_NAMES.items():
        found = next((folder / n for n in names if (folder / n).is_file()), None)
        if found is None:
            raise DataError(f"{folder}: no {split} file (looked for {', '.join(names)})")
        paths[split] = found
    return paths


def read_text_file(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file with one sentence per line (whitespace at the
    ends removed). Refused with the file's name: missing, empty, binary (a NUL byte, or bytes
    that are not UTF-8: the offset is named), or no line break at all in a file of more than
    one sentence's length."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    nul = data.find(b"\0")
    if nul >= 0:
        raise DataError(f"{path}: binary file (a NUL byte at offset {nul}); a UTF-8 text file "
                        "with one sentence per line is expected")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                        f"{exc.start}); a UTF-8 text file with one sentence per line is "
                        "expected") from exc
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"{path}: empty (no text); one sentence per line is expected")
    if len(lines) == 1 and len(lines[0]) > 1000:
        raise DataError(f"{path}: no line breaks in {len(lines[0]):,} characters; one sentence "
                        "per line is expected (as in PTB's ptb.train.txt)")
    return lines


def read_text_splits(files: str | dict[str, str]) -> dict[str, list[str]]:
    """Lines of the train / valid / test files (see :func:`split_paths`, :func:`read_text_file`)."""
    return {split: read_text_file(path) for split, path in split_paths(files).items()}
