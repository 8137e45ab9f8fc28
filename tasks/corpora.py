"""Built-in text pair corpora read from files every machine already has (no downloads).

* :func:`gettext_pairs`: English -> X translation pairs from the gettext catalogs (``.mo``) of
  installed programs, e.g. ``/usr/share/locale/de/LC_MESSAGES/*.mo``.
* :func:`docstring_pairs`: summarization pairs (docstring body -> summary line) from the Python
  standard library (and optionally site-packages), parsed with ``ast`` without importing it.
"""

from __future__ import annotations

import ast
import gettext
import json
import logging
import os
import re
import struct
import sys
import sysconfig
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lstm_harness.tasks.data import DataError, Pair, cache_dir, stable_hash

log = logging.getLogger(__name__)

FILES_HINT = "use `source: files` with your own pair files instead"

# --- gettext catalogs -------------------------------------------------------------------------

# printf conversions (%s, %d, %zu, %.250s, %1$s, %-10lld, %<PRIu64>), Python's %(name)s and
# str.format fields ({0}, {name}, {0:>5}); removed before judging whether a source is language.
FORMAT_SPEC = re.compile(
    r"%%"
    r"|%\([^)]*\)[-+ #0]*\d*(?:\.\d+)?[a-zA-Z]"
    r"|%<PRI\w+>"
    r"|%(?:\d+\$)?[-+ #0']*(?:\*(?:\d+\$)?|\d+)?(?:\.(?:\*(?:\d+\$)?|\d+))?"
    r"(?:hh|h|ll|l|L|q|j|z|Z|t)?[diouxXeEfFgGaAcCsSpnm]"
    r"|\{[^{}\s]*\}"
)
# A "word": two or more letters in a row (no digits or underscores).
WORD = re.compile(r"[^\W\d_]{2,}")
CHARSET = re.compile(rb"charset=([-\w.:]+)", re.IGNORECASE)


@dataclass
class GettextStats:
    """What :func:`read_gettext` read and why entries were dropped."""

    catalogs: int = 0
    fallback: list[str] = field(default_factory=list)  # read by the raw reader (see below)
    skipped: list[str] = field(default_factory=list)  # unreadable catalogs
    entries: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pairs: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def _read_mo_raw(path: Path) -> dict[str | tuple[str, int], str]:
    """A minimal ``.mo`` reader decoding with the catalog's declared charset.

    Used when ``gettext.GNUTranslations`` fails: it decodes the header as UTF-8 before knowing
    the charset, so an ISO-8859-1 header (e.g. net-tools' translator names) breaks it."""
    buf = path.read_bytes()
    order = {0x950412DE: "<", 0xDE120495: ">"}.get(struct.unpack("<I", buf[:4])[0])
    if order is None:
        raise OSError(f"{path}: bad magic number")
    count, orig, trans = struct.unpack(order + "3I", buf[8:20])

    def blob(table: int, i: int) -> bytes:
        length, offset = struct.unpack(order + "2I", buf[table + 8 * i : table + 8 * i + 8])
        return buf[offset : offset + length]

    header = next((blob(trans, i) for i in range(count) if not blob(orig, i)), b"")
    match = CHARSET.search(header)
    charset = match.group(1).decode("ascii") if match else "ascii"
    catalog: dict[str | tuple[str, int], str] = {}
    for i in range(count):
        msg, tmsg = blob(orig, i), blob(trans, i)
        if b"\0" in msg:
            catalog[(msg.split(b"\0")[0].decode(charset), 0)] = tmsg.split(b"\0")[0].decode(charset)
        else:
            catalog[msg.decode(charset)] = tmsg.decode(charset)
    return catalog


def _read_catalog(path: Path, stats: GettextStats) -> dict[str | tuple[str, int], str] | None:
    try:
        with open(path, "rb") as fh:
            return gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
    except (OSError, UnicodeError, LookupError, ValueError, struct.error):
        pass
    try:
        catalog = _read_mo_raw(path)
    except (OSError, UnicodeError, LookupError, ValueError, struct.error) as err:
        log.debug("skipping unreadable gettext catalog %s: %s", path, err)
        stats.skipped.append(path.name)
        return None
    stats.fallback.append(path.name)
    return catalog


def is_linguistic(text: str) -> bool:
    """Whether ``text`` has a word of 2+ letters once format specifiers are removed."""
    return WORD.search(FORMAT_SPEC.sub(" ", text)) is not None


def clean_gettext_entry(msgid: object, msgstr: str, max_words: int) -> Pair | str:
    """The cleaned ``(english, translation)`` pair, or the reason the entry is dropped.

    Rules, in order: plural entries (tuple keys) and the header (empty msgid) go; a message
    context (``ctx\\x04msgid``) is removed; both sides are stripped; empty translations go;
    multi-line entries (``\\n`` or ``\\r`` on either side) go; a source with no word of two or
    more letters once printf/Python/format-string placeholders are removed (``"%s: %s"``,
    ``"%d%%"``, ``"{0} ({1})"``) goes; pairs with more than ``max_words`` words on either side go.
    """
    if not isinstance(msgid, str):
        return "plural"
    source = msgid.rsplit("\x04", 1)[-1].strip()
    target = msgstr.strip()
    if not source:
        return "header"
    if not target:
        return "untranslated"
    if any(c in text for text in (source, target) for c in "\n\r"):
        return "multiline"
    if not is_linguistic(source):
        return "format_only"
    if max(len(source.split()), len(target.split())) > max_words:
        return "too_long"
    return source, target


def _available_languages(locale_dir: Path) -> str:
    folders = sorted(locale_dir.iterdir()) if locale_dir.is_dir() else []
    counts = {d.name: len(list((d / "LC_MESSAGES").glob("*.mo"))) for d in folders}
    counts = {lang: n for lang, n in counts.items() if n}
    if not counts:
        return f"{locale_dir} holds no catalogs at all"
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    listed = ", ".join(f"{lang} ({n})" for lang, n in best)
    return f"languages with the most catalogs: {listed} ({len(counts)} languages in all)"


def read_gettext(
    lang: str, locale_dir: str | os.PathLike[str] = "/usr/share/locale", max_words: int = 30
) -> tuple[list[Pair], GettextStats]:
    """:func:`gettext_pairs` plus the statistics of what was read and dropped."""
    root = Path(locale_dir)
    folder = root / lang / "LC_MESSAGES"
    files = sorted(folder.glob("*.mo")) if folder.is_dir() else []
    if not files:
        raise DataError(
            f"gettext: no catalogs (*.mo) in {folder}; {_available_languages(root)}. "
            f"Pick one of those languages or {FILES_HINT}"
        )
    stats = GettextStats()
    seen: set[str] = set()
    pairs: list[Pair] = []
    for path in files:
        catalog = _read_catalog(path, stats)
        if catalog is None:
            continue
        stats.catalogs += 1
        for msgid, msgstr in catalog.items():
            stats.entries += 1
            cleaned = clean_gettext_entry(msgid, msgstr, max_words)
            if isinstance(cleaned, str):
                stats.drop(cleaned)
            elif cleaned[0] in seen:
                stats.drop("duplicate")
            else:
                seen.add(cleaned[0])
                pairs.append(cleaned)
    stats.pairs = len(pairs)
    if not pairs:
        raise DataError(f"gettext: no usable pairs in the catalogs of {folder}; {FILES_HINT}")
    return pairs, stats


def gettext_pairs(
    lang: str, locale_dir: str = "/usr/share/locale", max_words: int = 30
) -> list[Pair]:
    """English msgid -> ``lang`` msgstr pairs from ``<locale_dir>/<lang>/LC_MESSAGES/*.mo``.

    Catalogs are read in file-name order; unreadable ones are skipped (logged); entries are
    cleaned by :func:`clean_gettext_entry`; one translation is kept per English source (the
    first met)."""
    pairs, stats = read_gettext(lang, locale_dir, max_words)
    if stats.skipped:
        log.info("gettext %s: skipped %d unreadable catalog(s): %s", lang, len(stats.skipped),
                 ", ".join(stats.skipped))
    return pairs


# --- docstrings -------------------------------------------------------------------------------

SKIP_DIRS = frozenset(
    {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__"}
)
DOCSTRING_CACHE_VERSION = 1


def _root_dirs(roots: str | Sequence[str | os.PathLike[str]]) -> list[Path]:
    paths = sysconfig.get_paths()
    if roots == "stdlib":
        dirs = [paths["stdlib"]]
    elif roots == "all":
        dirs = [paths["stdlib"], paths["purelib"], paths["platlib"]]
    elif isinstance(roots, str):
        raise DataError(
            f"docstrings: roots '{roots}' is not allowed; use 'stdlib', 'all' (stdlib and "
            "site-packages) or a list of directories"
        )
    else:
        dirs = [os.fspath(r) for r in roots]
        missing = [d for d in dirs if not os.path.isdir(d)]
        if missing:
            raise DataError(f"docstrings: root folder(s) not found: {missing}")
    unique: list[Path] = []
    for d in dirs:
        resolved = Path(d).resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def _python_files(roots: list[Path]) -> list[Path]:
    """``.py`` files under ``roots``, skipping test/idlelib/site-packages/... folders, sorted."""
    found: set[Path] = set()
    for root in roots:
        for folder, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
            found.update(Path(folder) / f for f in filenames if f.endswith(".py"))
    return sorted(found)


def _docstrings(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, cleaned docstring)`` of the module, classes and functions of one file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return
    for node in [tree, *_definitions(tree)]:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield getattr(node, "lineno", 0), doc


def _definitions(node: ast.AST) -> Iterator[ast.AST]:
    """Classes and functions below ``node``, not descending into expressions (no docstrings
    there; skipping them is several times faster than ``ast.walk``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            continue
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield child
        yield from _definitions(child)


def split_docstring(doc: str) -> Pair | None:
    """``(body, summary)`` of a cleaned docstring: the summary is the first paragraph joined to
    one line, the body everything after the first blank line with whitespace collapsed; None
    without a blank line followed by text."""
    lines = doc.splitlines()
    blank = next((i for i, line in enumerate(lines) if not line.strip()), None)
    if blank is None:
        return None
    summary = " ".join(" ".join(lines[:blank]).split())
    body = " ".join(" ".join(lines[blank + 1 :]).split())
    return (body, summary) if summary and body else None


def _extract(
    files: list[Path], min_body_words: int, max_body_words: int, max_summary_words: int
) -> list[Pair]:
    found: list[tuple[str, int, Pair]] = []
    for path in files:
        for line, doc in _docstrings(path):
            pair = split_docstring(doc)
            if pair is None:
                continue
            body_words, summary_words = len(pair[0].split()), len(pair[1].split())
            if (
                min_body_words <= body_words <= max_body_words
                and summary_words <= max_summary_words
            ):
                found.append((str(path), line, pair))
    found.sort(key=lambda item: (item[0], item[1]))
    seen: set[str] = set()
    pairs: list[Pair] = []
    for _, _, pair in found:
        if pair[0] not in seen:
            seen.add(pair[0])
            pairs.append(pair)
    return pairs


def docstring_pairs(
    roots: str | Sequence[str | os.PathLike[str]] = "stdlib",
    min_body_words: int = 20,
    max_body_words: int = 200,
    max_summary_words: int = 30,
) -> list[Pair]:
    """(docstring body, summary line) pairs from module/class/function docstrings.

    ``roots``: ``"stdlib"`` (the standard library), ``"all"`` (plus site-packages) or a list of
    directories. Files are parsed with ``ast``, never imported; bodies are filtered by word
    count, duplicates (same body) dropped, and pairs ordered by file path and line. The result
    is cached under :func:`~tasks.data.cache_dir`, keyed by the filters, the Python version and
    every file's path, size and modification time."""
    dirs = _root_dirs(roots)
    files = _python_files(dirs)
    filters = (min_body_words, max_body_words, max_summary_words)
    listing = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        listing.append((str(path), st.st_size, st.st_mtime_ns))
    # slot: what was asked for; key: the files' state. A new state replaces the slot's old file.
    slot = stable_hash(DOCSTRING_CACHE_VERSION, [str(d) for d in dirs], filters, sys.version)
    key = stable_hash(slot, listing)
    cached = cache_dir() / f"docstrings-{slot[:12]}-{key[:12]}.json"
    try:
        return [(body, summary) for body, summary in json.loads(cached.read_text("utf-8"))]
    except (OSError, ValueError, TypeError):
        pass
    pairs = _extract(files, *filters)
    if not pairs:
        raise DataError(
            f"docstrings: no docstring with a summary line, a blank line and a body of "
            f"{min_body_words}-{max_body_words} words in {len(files)} .py file(s) under "
            f"{[str(d) for d in dirs]}; {FILES_HINT}"
        )
    for stale in cached.parent.glob(f"docstrings-{slot[:12]}-*.json"):
        if stale != cached:
            stale.unlink(missing_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(pairs, ensure_ascii=False), "utf-8")
    os.replace(tmp, cached)
    return pairs
