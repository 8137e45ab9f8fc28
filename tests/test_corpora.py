"""Built-in corpora: gettext catalogs and Python docstrings."""

from __future__ import annotations

import struct
import textwrap
from pathlib import Path

import pytest

from lstm_harness.tasks import corpora
from lstm_harness.tasks.corpora import (
    clean_gettext_entry,
    docstring_pairs,
    gettext_pairs,
    is_linguistic,
    read_gettext,
    split_docstring,
)
from lstm_harness.tasks.data import DataError

SYSTEM_DE = Path("/usr/share/locale/de/LC_MESSAGES")
HEADER = "Content-Type: text/plain; charset={charset}\nLast-Translator: Ralf B\xe4chle\n"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_HARNESS_CACHE", str(tmp_path / "cache"))


def write_mo(path: Path, entries: list[tuple[str, str]], charset: str = "UTF-8") -> None:
    """A GNU .mo catalog (little endian, no hash table) holding ``entries`` in the given order,
    after a header entry declaring ``charset``. Plural forms: msgid and msgstr joined by NUL."""
    items = [("", HEADER.format(charset=charset)), *entries]
    ids = [k.encode(charset) for k, _ in items]
    strs = [v.encode(charset) for _, v in items]
    n = len(items)
    offset = 28 + 16 * n
    tables, blobs = [b"", b""], b""
    for i, blob_list in enumerate((ids, strs)):
        for blob in blob_list:
            tables[i] += struct.pack("<2I", len(blob), offset + len(blobs))
            blobs += blob + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 28 + 16 * n)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + tables[0] + tables[1] + blobs)


@pytest.fixture
def locale(tmp_path: Path) -> Path:
    root = tmp_path / "locale"
    folder = root / "de" / "LC_MESSAGES"
    write_mo(folder / "a.mo", [
        ("Open file", "Datei öffnen"),
        ("%s: %s", "%s: %s"),                     # only placeholders: dropped
        ("%d%%", "%d %%"),                        # dropped
        ("{0} ({name})", "{0} ({name})"),         # dropped
        ("x %s", "x %s"),                         # no word of 2+ letters: dropped
        ("  Save  ", " Speichern "),              # stripped
        ("Line one\nLine two", "Zeile eins\nZeile zwei"),  # multi-line: dropped
        ("Quit", ""),                             # untranslated: dropped
        ("%d file\0%d files", "%d Datei\0%d Dateien"),     # plural: dropped
        ("menu\x04Close", "Schließen"),           # context removed
        ("one two three four five", "eins zwei drei vier fünf"),  # over max_words=4
        ("Error: %s", "Fehler: %s"),
    ])
    write_mo(folder / "b.mo", [("Open file", "Datei aufmachen"), ("Help", "Hilfe")])
    write_mo(folder / "c.mo", [("Size", "Größe")], charset="iso-8859-1")
    (folder / "d.mo").write_bytes(b"not a catalog at all")
    write_mo(root / "fr" / "LC_MESSAGES" / "a.mo", [("Help", "Aide")])
    write_mo(root / "fr" / "LC_MESSAGES" / "b.mo", [("Yes", "Oui")])
    return root


def test_synthetic_catalogs_exact_pairs(locale: Path) -> None:
    pairs, stats = read_gettext("de", str(locale), max_words=4)
    assert pairs == [
        ("Open file", "Datei öffnen"),
        ("Save", "Speichern"),
        ("Close", "Schließen"),
        ("Error: %s", "Fehler: %s"),
        ("Help", "Hilfe"),
        ("Size", "Größe"),  # ISO-8859-1 catalog that gettext.GNUTranslations cannot read
    ]
    assert stats.catalogs == 3 and stats.fallback == ["c.mo"] and stats.skipped == ["d.mo"]
    assert stats.dropped == {
        "header": 3, "format_only": 4, "multiline": 1, "untranslated": 1, "plural": 2,
        "too_long": 1, "duplicate": 1,
    }
    assert gettext_pairs("de", str(locale), max_words=4) == pairs
    assert ("one two three four five", "eins zwei drei vier fünf") in gettext_pairs(
        "de", str(locale), max_words=5
    )


def test_cleaning_rules() -> None:
    for text in ["%s: %s", "%d%%", "%.250s", "%1$s %2$s", "%zu/%lld", "{0} {name}", "%(count)d",
                 "x %s", "-- %s --", "42", ""]:
        assert not is_linguistic(text), text
    for text in ["Open", "%s files", "Error: %s", "OK", "ID %d"]:
        assert is_linguistic(text), text
    assert clean_gettext_entry(("a", 0), "b", 30) == "plural"
    assert clean_gettext_entry("ctx\x04 Hi there ", " Hallo ", 30) == ("Hi there", "Hallo")


def test_missing_language_names_the_folder(locale: Path) -> None:
    with pytest.raises(DataError) as err:
        gettext_pairs("xx", str(locale))
    msg = str(err.value)
    assert str(locale / "xx" / "LC_MESSAGES") in msg
    assert "de (4), fr (2)" in msg and "source: files" in msg
    with pytest.raises(DataError, match="holds no catalogs"):
        gettext_pairs("de", str(locale / "nowhere"))


@pytest.mark.skipif(not SYSTEM_DE.is_dir(), reason="no German gettext catalogs on this machine")
def test_system_german_catalogs() -> None:
    pairs, stats = read_gettext("de")
    assert len(pairs) > 20_000
    sources = [s for s, _ in pairs]
    assert len(set(sources)) == len(sources)
    assert all("\n" not in s and "\n" not in t and s and t for s, t in pairs)
    assert all(is_linguistic(s) for s in sources)
    assert all(len(s.split()) <= 30 and len(t.split()) <= 30 for s, t in pairs)
    assert stats.dropped["format_only"] > 0


DOCS = {
    "pkg/mod.py": '''
        """Module summary line.

        The module body has a few words.
        """


        def f():
            """Function summary
            continues here.

            Body of the    function
               with odd   spacing.
            """


        class C:
            """No body here."""

            def m(self):
                """Short.

                Too short
                """

            def n(self):
                """Method summary.

                The module body has a few words.
                """
        ''',
    "pkg/a.py": '''
        def g():
            """A summary that has far too many words to pass the filter.

            Some body text of five words.
            """
        ''',
    "pkg/tests/test_x.py": '''
        """Skipped: test folder.

        Lots and lots of words here.
        """
        ''',
    "pkg/broken.py": '"""Broken.\n\nNot parsed at all ok.\n"""\ndef (:\n',
    "pkg/latin.py": (
        b'# -*- coding: latin-1 -*-\n"""Caf\xe9 module.\n\nA body with caf\xe9 in it.\n"""\n'
    ),
}


@pytest.fixture
def src_tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for name, text in DOCS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text))
    return root


def test_docstring_pairs_exact(
    src_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = docstring_pairs([src_tree], min_body_words=3, max_body_words=10, max_summary_words=5)
    assert pairs == [
        ("A body with café in it.", "Café module."),
        ("The module body has a few words.", "Module summary line."),
        ("Body of the function with odd spacing.", "Function summary continues here."),
        # m: body "Too short" has 2 words; n: same body as the module, dropped as duplicate
    ]
    assert len(list((tmp_path / "cache").glob("docstrings-*.json"))) == 1
    with monkeypatch.context() as patch:  # the second call reads the cache, parses nothing
        patch.setattr(corpora, "_extract", None)
        assert docstring_pairs([str(src_tree)], 3, 10, 5) == pairs
    # an edited file invalidates the cache
    (src_tree / "pkg" / "a.py").write_text('"""New summary.\n\nA brand new body.\n"""\n')
    assert docstring_pairs([src_tree], 3, 10, 5)[0] == ("A brand new body.", "New summary.")
    assert len(list((tmp_path / "cache").glob("docstrings-*.json"))) == 1  # the old one went
    docstring_pairs([src_tree], 2, 10, 5)  # other filters: another cache file
    assert len(list((tmp_path / "cache").glob("docstrings-*.json"))) == 2


def test_split_docstring() -> None:
    assert split_docstring("One line only.") is None
    assert split_docstring("Summary.\n\n") is None
    assert split_docstring("Two\nlines.\n\nBody\n\n  more.") == ("Body more.", "Two lines.")


def test_docstring_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="roots 'site' is not allowed; use 'stdlib', 'all'"):
        docstring_pairs("site")
    with pytest.raises(DataError, match="root folder"):
        docstring_pairs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no docstring .* in 0 \.py file.*source: files"):
        docstring_pairs([tmp_path / "empty"])


def test_stdlib_docstrings() -> None:
    pairs = docstring_pairs()
    assert len(pairs) > 500
    assert len({body for body, _ in pairs}) == len(pairs)
    assert all(20 <= len(body.split()) <= 200 and 1 <= len(s.split()) <= 30 for body, s in pairs)
