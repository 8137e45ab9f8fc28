"""Text pair sources for the translation and summarization tasks.

A source gives ``(source text, target text)`` pairs per split. Local files are read through HF
``datasets``' ``json`` and ``csv`` builders after a cheap pre-check that turns malformed input
into a :class:`DataError` naming the file and line; hub datasets are loaded by name and fail
fast, with a hint to use local files, when the Hub cannot be reached. :func:`assign_splits`
turns whatever splits a source has into train/valid/test.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import pathlib
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

Pair = tuple[str, str]

SPLITS = ("train", "valid", "test")
FORMATS = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv"}
EXTENSIONS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
SPLIT_ALIASES = {"validation": "valid", "dev": "valid", "val": "valid"}
LOCAL_FILES_HINT = (
    "use local files instead: source: files, files: {train: train.jsonl, valid: valid.jsonl, "
    "test: test.jsonl}, columns: [src, tgt]"
)
HUB_PROBE_TIMEOUT_S = 3.0


class DataError(ValueError):
    """A data source is missing or malformed; the message names the file/field and the fix."""


def cache_dir() -> pathlib.Path:
    """The harness cache folder: ``$LSTM_HARNESS_CACHE`` or ``~/.cache/lstm-harness``."""
    root = os.environ.get("LSTM_HARNESS_CACHE") or "~/.cache/lstm-harness"
    path = pathlib.Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(*parts: object) -> str:
    """Hex sha1 of the JSON of ``parts`` (``repr`` for what JSON cannot encode); a cache key."""
    text = json.dumps(parts, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _unit(text: str, salt: str) -> float:
    digest = hashlib.sha1(f"{salt}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(
    pairs: list[Pair], valid_fraction: float, test_fraction: float, salt: str = ""
) -> dict[str, list[Pair]]:
    """Split by a hash of the source text: identical sources share a split, order is kept."""
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise DataError(
            f"valid_fraction ({valid_fraction}) and test_fraction ({test_fraction}) must be "
            "non-negative with a sum below 1"
        )
    out: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    for pair in pairs:
        u = _unit(pair[0], salt)
        if u < test_fraction:
            out["test"].append(pair)
        elif u < test_fraction + valid_fraction:
            out["valid"].append(pair)
        else:
            out["train"].append(pair)
    return out


def assign_splits(
    parts: dict[str, list[Pair]], valid_fraction: float, test_fraction: float, origin: str
) -> dict[str, list[Pair]]:
    """Turn ``{"all": ...}`` or ``{"train": ..., maybe "valid"/"test"}`` into train/valid/test,
    carving missing held-out splits out of the available data with :func:`hash_split`."""
    keys = set(parts)
    if keys == {"all"}:
        out = hash_split(parts["all"], valid_fraction, test_fraction)
    elif "train" in keys and keys <= set(SPLITS):
        missing = [s for s in ("valid", "test") if s not in keys]
        carved = hash_split(
            parts["train"],
            valid_fraction if "valid" in missing else 0.0,
            test_fraction if "test" in missing else 0.0,
        )
        # train is what is left after carving; given held-out splits are kept as they are
        out = {**carved, **{split: parts[split] for split in keys - {"train"}}}
    else:
        raise DataError(
            f"{origin}: has splits {sorted(keys)}; expected either 'all' alone or 'train' with "
            "optional 'valid' and 'test'"
        )
    for split in SPLITS:
        if not out[split]:
            fractions = {"valid": valid_fraction, "test": test_fraction}
            hint = (
                f"none of the {len(parts.get('all', parts.get('train', [])))} available examples "
                f"fell into it with {split}_fraction={fractions[split]}; add data, raise "
                f"{split}_fraction or give a {split} file"
                if split in fractions and split not in parts
                else "it has no examples"
            )
            raise DataError(f"{origin}: the {split} split is empty ({hint})")
    return out


# --- local files ------------------------------------------------------------------------------


def _resolve_format(path: str, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(f"format '{fmt}' is not supported; allowed: {', '.join(FORMATS)}")
        return fmt
    ext = pathlib.Path(path).suffix.lower()
    if ext not in EXTENSIONS:
        raise DataError(
            f"{path}: cannot infer the format from the extension '{ext}'; use one of "
            f"{', '.join(EXTENSIONS)} or give the format ({', '.join(FORMATS)})"
        )
    return EXTENSIONS[ext]


def _field(row: dict[str, Any], column: str) -> tuple[bool, Any]:
    """``(found, value)`` of a column; dotted names reach into nested objects."""
    if column in row:
        return True, row[column]
    value: Any = row
    for key in column.split("."):
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def _missing_columns(
    path: str, where: str, columns: tuple[str, str], missing: list[str], found: list[str]
) -> DataError:
    return DataError(
        f"{path}{where}: missing column(s) {missing}; expected columns {list(columns)}, "
        f"found {found}"
    )


def _check_value(path: str, where: str, column: str, value: Any) -> None:
    if value is None:
        raise DataError(f"{path} {where}: column '{column}' is null; expected a non-empty string")
    if not isinstance(value, str):
        raise DataError(
            f"{path} {where}: column '{column}' is not a string ({type(value).__name__} "
            f"{value!r}); expected a non-empty string"
        )
    if not value.strip():
        raise DataError(f"{path} {where}: column '{column}' is empty; expected a non-empty string")


def _json_records(path: str) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for a JSON Lines file, or for a file holding one JSON array."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
        for index, record in enumerate(records, 1):
            yield f"record {index}", record
        return
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 is text
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number}: not valid JSON ({err.msg})") from None
        yield f"line {number}", record


def _check_json(path: str, columns: tuple[str, str]) -> int:
    """Validate every record; return the number of records."""
    count = 0
    for where, record in _json_records(path):
        if not isinstance(record, dict):
            raise DataError(
                f"{path} {where}: expected a JSON object with columns {list(columns)}, "
                f"got {type(record).__name__}"
            )
        fields = {column: _field(record, column) for column in columns}
        missing = [column for column, (found, _) in fields.items() if not found]
        if missing:
            raise _missing_columns(path, f" {where}", columns, missing, list(record))
        for column, (_, value) in fields.items():
            _check_value(path, where, column, value)
        count += 1
    return count


def _csv_header(path: str, delimiter: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh, delimiter=delimiter), [])


def _column_pairs(data: Any, columns: tuple[str, str]) -> list[Pair]:
    """The two columns of a (flattened) ``datasets.Dataset`` as pairs."""
    return list(zip(data[columns[0]], data[columns[1]], strict=True))


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide ``datasets``' progress bars for the duration."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _read_one(path: str, columns: tuple[str, str], fmt: str) -> list[Pair]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    kwargs: dict[str, Any] = {}
    try:
        if FORMATS[fmt] == "json":
            if _check_json(path, columns) == 0:
                raise DataError(f"{path}: no examples")
        else:
            delimiter = "\t" if fmt == "tsv" else ","
            header = _csv_header(path, delimiter)
            if not header:
                raise DataError(f"{path}: no examples (the file is empty)")
            missing = [c for c in columns if c not in header]
            if missing:
                raise _missing_columns(path, "", columns, missing, header)
            from datasets import Features, Value

            # All columns as text, and no "NA"/"null"/empty-cell guessing: cells stay strings.
            kwargs = {
                "delimiter": delimiter,
                "features": Features({name: Value("string") for name in header}),
                "keep_default_na": False,
                "na_filter": False,
            }
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    import datasets

    try:
        with _quiet_datasets():
            data = datasets.load_dataset(
                FORMATS[fmt],
                data_files=str(path),
                split="train",
                cache_dir=str(cache_dir() / "datasets"),
                **kwargs,
            )
    except Exception as err:  # datasets wraps parser errors in many types
        reason = str(err).strip() or type(err).__name__
        if "corresponds to no data" in reason:
            raise DataError(f"{path}: no examples") from None
        raise DataError(f"{path}: could not read as {fmt}: {reason}") from None
    if len(data) == 0:
        raise DataError(f"{path}: no examples")
    data = data.flatten()
    missing = [c for c in columns if c not in data.column_names]
    if missing:
        raise _missing_columns(path, "", columns, missing, data.column_names)
    pairs = _column_pairs(data, columns)
    for row, pair in enumerate(pairs, 1):  # JSON was checked above; this is for CSV
        for column, value in zip(columns, pair, strict=True):
            _check_value(path, f"row {row} (header not counted)", column, value)
    return pairs


def read_pair_files(
    files: str | dict[str, str], columns: tuple[str, str], fmt: str | None = None
) -> dict[str, list[Pair]]:
    """Read pairs from local jsonl/json/csv/tsv files: one path gives ``{"all": pairs}``, a dict
    ``{split: path}`` (splits among train/valid/test) gives one entry per split."""
    if len(columns) != 2:
        raise DataError(f"columns must name two fields (source, target), got {list(columns)}")
    columns = (str(columns[0]), str(columns[1]))
    if isinstance(files, (str, os.PathLike)):
        named = {"all": os.fspath(files)}
    else:
        unknown = [key for key in files if key not in SPLITS]
        if unknown:
            raise DataError(f"files: unknown split(s) {unknown}; allowed: {', '.join(SPLITS)}")
        named = {key: os.fspath(path) for key, path in files.items()}
    return {
        split: _read_one(path, columns, _resolve_format(path, fmt)) for split, path in named.items()
    }


# --- the Hugging Face Hub ----------------------------------------------------------------------


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within ``timeout`` seconds.

    Behind a proxy the direct probe says nothing, so it is skipped (reported reachable)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_mode() -> Iterator[None]:
    """Force offline mode in ``datasets`` and ``huggingface_hub`` (both read their env vars at
    import time), so a cached copy still loads and an uncached one fails at once."""
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _is_offline() -> bool:
    import datasets.config

    env = any(
        os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"}
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    return env or bool(datasets.config.HF_HUB_OFFLINE)


def read_hub_pairs(
    dataset: str, config: str | None, columns: tuple[str, str]
) -> dict[str, list[Pair]]:
    """Load a Hub dataset with ``datasets.load_dataset(dataset, config)``; split names are
    normalised (validation/dev -> valid) and dotted columns reach nested fields."""
    import datasets

    def fail(reason: str) -> DataError:
        return DataError(
            f"could not load hub dataset '{dataset}' (config {config}): {reason}. "
            f"This machine may be offline; {LOCAL_FILES_HINT}"
        )

    offline = _is_offline()
    reason_prefix = "offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)" if offline else ""
    if not offline and not _hub_reachable():
        offline, reason_prefix = True, "the Hub is not reachable"
    try:
        with _quiet_datasets(), (_offline_mode() if offline else contextlib.nullcontext()):
            loaded = datasets.load_dataset(dataset, config)
    except Exception as err:  # offline, unknown name, bad config, ...
        reason = str(err).strip() or type(err).__name__
        raise fail(f"{reason_prefix}; {reason}" if reason_prefix else reason) from None
    out: dict[str, list[Pair]] = {}
    for name, split in loaded.items():
        key = SPLIT_ALIASES.get(name, name)
        flat = split.flatten()
        missing = [c for c in columns if c not in flat.column_names]
        if missing:
            raise fail(
                f"split '{name}' lacks column(s) {missing}; expected {list(columns)}, "
                f"found {flat.column_names}"
            )
        pairs = _column_pairs(flat, columns)
        for row, pair in enumerate(pairs, 1):
            for column, value in zip(columns, pair, strict=True):
                if not isinstance(value, str):
                    raise fail(f"split '{name}' row {row}: column '{column}' is {value!r}")
        out[key] = pairs
    return out
