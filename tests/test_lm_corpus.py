"""The language-model corpora: the built-in Python-documentation prose and a user's text files
(PTB / WikiText-2 layout), with the bad inputs refused before launch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lstm_harness.cli import main
from lstm_harness.tasks.data import DataError
from lstm_harness.tasks.lm_corpus import (
    normalise_sentence,
    prose_paragraphs,
    python_docs_sentences,
    read_text_file,
    split_of,
    split_paths,
)

PTB_TRAIN = "the cat sat on the mat\nthe dog sat on the <unk>\n a cat and a dog \n\n"


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LSTM_HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_normalise_sentence_ptb_style() -> None:
    assert normalise_sentence("Return the value of `x` (an int), e.g. 42 items.") == (
        "return the value of an int N items")
    # identifiers and calls are code, dropped; 3.5 is a number
    assert normalise_sentence("Call os.path.join(a, b) with 3.5 arguments here") == (
        "call b with arguments here")
    assert normalise_sentence("It is the caller's job, isn't it?") == (
        "it is the caller's job isn't it")
    assert normalise_sentence("Too short.") == ""  # fewer than 4 words
    assert normalise_sentence("1 2 3 4 five six") == ""  # more numbers than words: a table row


def test_prose_paragraphs_leave_out_code() -> None:
    doc = ("Compute the thing.\n\nThe body explains it in words\nover two lines.\n\n"
           ">>> compute(1)\n2\n\nParameters:\n    x -- an integer\n    y -- another\n")
    assert prose_paragraphs(doc) == ["Compute the thing.",
                                     "The body explains it in words over two lines.",
                                     "Parameters:"]  # "2": a doctest's output, no letters


def test_split_of_is_a_hash_of_the_document() -> None:
    docs = [f"document number {i} with some text" for i in range(2000)]
    splits = [split_of(d) for d in docs]
    assert splits == [split_of(d) for d in docs]
    shares = {s: splits.count(s) / len(docs) for s in ("train", "valid", "test")}
    assert shares["train"] == pytest.approx(0.85, abs=0.03)
    assert shares["valid"] == pytest.approx(0.075, abs=0.02)


def test_python_docs_corpus_is_normalised_and_splits_disjoint() -> None:
    splits = python_docs_sentences("stdlib")
    assert set(splits) == {"train", "valid", "test"}
    words = {s: sum(len(x.split()) for x in lines) for s, lines in splits.items()}
    assert words["train"] > 100_000 and words["valid"] > 5_000 and words["test"] > 5_000
    token = re.compile(r"N|[a-z]+(?:'[a-z]+)?")
    for lines in splits.values():
        for line in lines[:2000]:
            assert all(token.fullmatch(w) for w in line.split()), line
    train, valid, test = (set(splits[s]) for s in ("train", "valid", "test"))
    assert not train & valid and not train & test and not valid & test
    assert python_docs_sentences("stdlib") == splits  # the cached copy reads the same


def write_ptb(folder: Path, train: str = PTB_TRAIN, valid: str = "the cat\n",
              test: str = "a dog sat\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"ptb.{split}.txt").write_text(text)
    return folder


def test_split_files_found_by_their_usual_names(tmp_path: Path) -> None:
    folder = write_ptb(tmp_path / "ptb")
    assert split_paths(str(folder)) == {s: folder / f"ptb.{s}.txt"
                                        for s in ("train", "valid", "test")}
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    for s in ("train", "valid", "test"):
        (wiki / f"wiki.{s}.tokens").write_text("x y\n")
    assert split_paths(str(wiki))["valid"] == wiki / "wiki.valid.tokens"
    mapping = {"train": "a.txt", "valid": "b.txt", "test": "c.txt"}
    assert split_paths(mapping) == {k: Path(v) for k, v in mapping.items()}


def test_read_text_file_keeps_lines_and_unk(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(PTB_TRAIN)
    assert read_text_file(path) == ["the cat sat on the mat", "the dog sat on the <unk>",
                                    "a cat and a dog"]


@pytest.mark.parametrize("content, message", [
    (b"", "empty (no text)"),
    (b"  \n\n \n", "empty (no text)"),
    (b"text\x00more\n", "binary file (a NUL byte at offset 4)"),
    (b"caf\xe9 au lait\n", "not UTF-8 text (byte 0xe9 at offset 3)"),
    (b"x" * 2000, "no line breaks in 2,000 characters"),
], ids=["empty", "blank", "nul", "latin1", "unbroken"])
def test_bad_text_files_are_refused_naming_the_file(tmp_path: Path, content: bytes,
                                                    message: str) -> None:
    path = tmp_path / "ptb.train.txt"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_text_file(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_missing_split_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.txt").write_text("a b\n")
    with pytest.raises(DataError, match=r"data: no valid file \(looked for valid.txt, "):
        split_paths(str(folder))
    with pytest.raises(DataError, match="nowhere: folder not found"):
        split_paths(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="missing: test; unknown: dev"):
        split_paths({"train": "a", "valid": "b", "dev": "c"})


SUITE = """
name: lmbad
tasks:
  - {{name: language_model, params: {{source: files, files: {files}, vocab_size: {vocab}}}}}
base:
  model: {{embed: 8, hidden: 8}}
  train: {{steps: 2, batch_size: 2}}
seeds: [0]
metrics: [perplexity]
"""


def run_validate(tmp_path: Path, files: str, vocab: int = 100) -> str:
    suite = tmp_path / "lmbad.yaml"
    suite.write_text(SUITE.format(files=files, vocab=vocab))
    assert main(["validate", str(suite)]) == 2
    return str(suite)


@pytest.mark.parametrize("split, content, message", [
    ("train", b"", "empty (no text)"),
    ("valid", b"\x00\x01binary", "binary file"),
    ("test", b"x " * 600, "no line breaks"),
], ids=["empty-train", "binary-valid", "unbroken-test"])
def test_validate_refuses_bad_lm_files_with_exit_2(tmp_path: Path, capsys, split: str,
                                                   content: bytes, message: str) -> None:
    folder = write_ptb(tmp_path / "ptb")
    (folder / f"ptb.{split}.txt").write_bytes(content)
    suite = run_validate(tmp_path, "ptb")  # relative to the suite file's folder
    err = capsys.readouterr().err
    assert f"error: {suite}: tasks[0].params.files: {folder}/ptb.{split}.txt: {message}" in err
    assert err.count("error:") == 1


def test_validate_refuses_a_vocabulary_cap_of_0(tmp_path: Path, capsys) -> None:
    write_ptb(tmp_path / "ptb")
    suite = run_validate(tmp_path, "ptb", vocab=0)
    err = capsys.readouterr().err
    assert f"error: {suite}: tasks[0].params.vocab_size: Input should be greater than or " \
           "equal to 3 (got 0)" in err
