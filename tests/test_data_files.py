"""Pair sources: local files through datasets' builders, hash splits, offline hub loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lstm_harness.tasks import data
from lstm_harness.tasks.data import (
    DataError,
    assign_splits,
    hash_split,
    read_hub_pairs,
    read_pair_files,
)

COLUMNS = ("src", "tgt")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_HARNESS_CACHE", str(tmp_path / "cache"))


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_cache_dir_and_stable_hash(tmp_path: Path) -> None:
    assert data.cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()
    assert data.stable_hash("a", 1, [2]) == data.stable_hash("a", 1, [2])
    assert data.stable_hash("a", 1) != data.stable_hash("a", 2)
    assert len(data.stable_hash(Path("x"))) == 40


def test_reads_jsonl_csv_tsv(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "a.jsonl", [{"src": "ein Haus", "tgt": "a house", "id": 1}])
    (tmp_path / "b.csv").write_text('src,tgt\n"Hallo, Welt",hello world\nNA,null\n0,1\n')
    (tmp_path / "c.tsv").write_text("tgt\tsrc\nyes\tja\n")
    assert read_pair_files(str(jsonl), COLUMNS) == {"all": [("ein Haus", "a house")]}
    # CSV cells stay text: "NA", "null" and digits are not turned into missing values or numbers.
    assert read_pair_files(str(tmp_path / "b.csv"), COLUMNS)["all"] == [
        ("Hallo, Welt", "hello world"),
        ("NA", "null"),
        ("0", "1"),
    ]
    assert read_pair_files(str(tmp_path / "c.tsv"), COLUMNS) == {"all": [("ja", "yes")]}
    # the format can be given when the extension says nothing
    (tmp_path / "d.txt").write_text("src\ttgt\nx\ty\n")
    assert read_pair_files(str(tmp_path / "d.txt"), COLUMNS, fmt="tsv") == {"all": [("x", "y")]}


def test_splits_dict_and_nested_columns(tmp_path: Path) -> None:
    rows = [{"translation": {"en": f"e{i}", "de": f"d{i}"}} for i in range(3)]
    files = {
        "train": str(write_jsonl(tmp_path / "train.jsonl", rows)),
        "valid": str(write_jsonl(tmp_path / "valid.jsonl", rows[:1])),
    }
    out = read_pair_files(files, ("translation.en", "translation.de"))
    assert out == {"train": [("e0", "d0"), ("e1", "d1"), ("e2", "d2")], "valid": [("e0", "d0")]}


def test_edited_file_is_read_again(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"src": "a", "tgt": "b"}])
    assert read_pair_files(str(path), COLUMNS)["all"] == [("a", "b")]
    write_jsonl(path, [{"src": "c", "tgt": "d"}, {"src": "e", "tgt": "f"}])
    assert read_pair_files(str(path), COLUMNS)["all"] == [("c", "d"), ("e", "f")]


def test_malformed_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    # a raw U+2028 inside a string is valid JSON and does not end a line
    lines = ['{"src": "a\u2028b", "tgt": "b"}', '{"src": "c", "tgt": "d"}', '{"src": "e", "tgt": ']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl line 3: not valid JSON"):
        read_pair_files(str(path), COLUMNS)


def test_jsonl_line_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "list.jsonl", [{"src": "a", "tgt": "b"}, ["c", "d"]])
    with pytest.raises(DataError, match=r"list\.jsonl line 2: expected a JSON object"):
        read_pair_files(str(path), COLUMNS)


def test_missing_column_names_expected_and_found(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"source": "a", "tgt": "b"}])
    with pytest.raises(DataError) as err:
        read_pair_files(str(path), COLUMNS)
    msg = str(err.value)
    assert "a.jsonl" in msg and "['src']" in msg
    assert "expected columns ['src', 'tgt']" in msg and "found ['source', 'tgt']" in msg
    (tmp_path / "b.csv").write_text("en,de\nx,y\n")
    with pytest.raises(DataError, match=r"b\.csv: missing column\(s\) \['src', 'tgt'\]; "
                       r"expected columns \['src', 'tgt'\], found \['en', 'de'\]"):
        read_pair_files(str(tmp_path / "b.csv"), COLUMNS)


def test_null_and_non_string_values_name_the_row(tmp_path: Path) -> None:
    rows = [{"src": "a", "tgt": "b"}, {"src": "c", "tgt": "d"}, {"src": "e", "tgt": None}]
    path = write_jsonl(tmp_path / "null.jsonl", rows)
    with pytest.raises(DataError, match=r"null\.jsonl line 3: column 'tgt' is null"):
        read_pair_files(str(path), COLUMNS)
    path = write_jsonl(tmp_path / "num.jsonl", [{"src": 5, "tgt": "b"}])
    with pytest.raises(DataError, match=r"num\.jsonl line 1: column 'src' is not a string \(int"):
        read_pair_files(str(path), COLUMNS)
    (tmp_path / "gap.csv").write_text("src,tgt\na,b\nc,\n")
    with pytest.raises(DataError, match=r"gap\.csv row 2 .*column 'tgt' is empty"):
        read_pair_files(str(tmp_path / "gap.csv"), COLUMNS)


def test_empty_files_have_no_examples(tmp_path: Path) -> None:
    for name, text in [("e.jsonl", ""), ("blank.jsonl", "\n\n"), ("h.csv", "src,tgt\n"),
                       ("z.csv", "")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=rf"{name}: no examples"):
            read_pair_files(str(tmp_path / name), COLUMNS)


def test_missing_file_and_bad_keys(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=rf"{missing}: file not found"):
        read_pair_files(str(missing), COLUMNS)
    with pytest.raises(DataError, match=r"unknown split\(s\) \['dev'\]; allowed: train, valid"):
        read_pair_files({"train": str(missing), "dev": str(missing)}, COLUMNS)
    with pytest.raises(DataError, match=r"cannot infer the format.*'\.txt'"):
        read_pair_files(str(tmp_path / "a.txt"), COLUMNS)
    with pytest.raises(DataError, match=r"format 'xml' is not supported; allowed: jsonl"):
        read_pair_files(str(tmp_path / "a.txt"), COLUMNS, fmt="xml")


def test_hash_split_is_deterministic_disjoint_and_keeps_sources_together() -> None:
    pairs = [(f"sentence {i}", f"Satz {i}") for i in range(2000)]
    pairs += [("sentence 7", "another translation")]  # a repeated source
    a = hash_split(pairs, 0.1, 0.2)
    assert a == hash_split(list(pairs), 0.1, 0.2)
    assert sorted(sum(a.values(), [])) == sorted(pairs)
    sources = {split: {s for s, _ in a[split]} for split in a}
    assert not (sources["train"] & sources["valid"] or sources["train"] & sources["test"]
                or sources["valid"] & sources["test"])
    assert abs(len(a["valid"]) / len(pairs) - 0.1) < 0.03
    assert abs(len(a["test"]) / len(pairs) - 0.2) < 0.03
    # order within a split is the input order; a salt gives another split
    assert a["train"] == [p for p in pairs if p in set(a["train"])]
    assert hash_split(pairs, 0.1, 0.2, salt="x") != a
    with pytest.raises(DataError, match="sum below 1"):
        hash_split(pairs, 0.5, 0.5)


def test_assign_splits_carves_missing_splits() -> None:
    pairs = [(f"s{i}", f"t{i}") for i in range(500)]
    out = assign_splits({"all": pairs}, 0.1, 0.1, "x.jsonl")
    assert out == hash_split(pairs, 0.1, 0.1)
    given = [("v", "w")]
    out = assign_splits({"train": pairs, "valid": given}, 0.1, 0.1, "files")
    assert out["valid"] == given
    carved = hash_split(pairs, 0.0, 0.1)
    assert (out["train"], out["test"]) == (carved["train"], carved["test"])
    assert sorted(out["train"] + out["test"]) == sorted(pairs) and 20 < len(out["test"]) < 80
    out = assign_splits({"train": pairs, "valid": given, "test": given}, 0.1, 0.1, "files")
    assert out == {"train": pairs, "valid": given, "test": given}


def test_assign_splits_empty_split_errors() -> None:
    with pytest.raises(DataError, match=r"^tiny\.jsonl: the valid split is empty \(none of the 3"):
        assign_splits({"all": [("a", "b"), ("c", "d"), ("e", "f")]}, 0.01, 0.01, "tiny.jsonl")
    with pytest.raises(DataError, match=r"^corpus: the test split is empty \(it has no examples"):
        assign_splits({"train": [("a", "b")] * 50, "valid": [("c", "d")], "test": []}, 0.1, 0.1,
                      "corpus")
    with pytest.raises(DataError, match=r"files: has splits \['valid'\]; expected"):
        assign_splits({"valid": [("a", "b")]}, 0.1, 0.1, "files")


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode as the env vars would set it; datasets and huggingface_hub read them when
    imported, so their module-level flags are patched as well."""
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_hub_offline_fails_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)  # how fast it fails is measured by benchmarks/corpus_prep.py
    with pytest.raises(DataError) as err:
        read_hub_pairs("bentrevett/multi30k", None, ("en", "de"))
    msg = str(err.value)
    assert "'bentrevett/multi30k'" in msg and "offline" in msg
    assert "local files" in msg and "source: files" in msg


def test_hub_unreachable_forces_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(data, "_hub_reachable", lambda timeout=0: False)
    with pytest.raises(DataError, match=r"'abisee/cnn_dailymail' \(config 3.0.0\): the Hub is not "
                       r"reachable.*local files"):
        read_hub_pairs("abisee/cnn_dailymail", "3.0.0", ("article", "highlights"))
    assert datasets.config.HF_HUB_OFFLINE is False  # restored


def test_hub_loader_normalises_splits_and_nested_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # load_dataset on a local folder goes through the same code as a hub dataset
    _offline(monkeypatch)
    folder = tmp_path / "wmt"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"translation": {"en": "a", "de": "b"}}])
    write_jsonl(folder / "validation.jsonl", [{"translation": {"en": "c", "de": "d"}}])
    out = read_hub_pairs(str(folder), None, ("translation.en", "translation.de"))
    assert out == {"train": [("a", "b")], "valid": [("c", "d")]}
    with pytest.raises(DataError, match=r"lacks column\(s\) \['translation.fr'\]"):
        read_hub_pairs(str(folder), None, ("translation.en", "translation.fr"))
