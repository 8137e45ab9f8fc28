"""Vocabularies of the text tasks: special ids, round trips, word-level limits and the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer, models

from lstm_harness.tasks import tokenizer as tokenizer_module
from lstm_harness.tasks.base import BOS, EOS, PAD
from lstm_harness.tasks.tokenizer import SPECIALS, UNK, TextTokenizer, TokenizerConfig

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "pack my box with five dozen liquor jugs",
    "Hello, world! How are you?",
    "Grüße aus Köln: 3.14 ist fast pi.",
    "the dog sleeps",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_HARNESS_CACHE", str(tmp_path / "cache"))


def cached_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "tokenizers").glob("*.json"))


def normalised(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_special_ids(kind: str) -> None:
    tok = TextTokenizer.train(TEXTS, TokenizerConfig(kind=kind, vocab_size=200, min_frequency=1))
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    for i, name in enumerate(SPECIALS):
        assert tok.tokenizer.token_to_id(name) == i
        assert tok.token_text(i) == name
    # encode adds no BOS/EOS; every real token is past the specials
    ids = tok.encode(TEXTS)
    assert all(t > UNK for row in ids for t in row)
    assert tok.token_text(10**6) == ""


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_round_trip_of_seen_text(kind: str) -> None:
    tok = TextTokenizer.train(TEXTS, TokenizerConfig(kind=kind, vocab_size=500, min_frequency=1))
    assert tok.decode(tok.encode(TEXTS)) == [normalised(t) for t in TEXTS]
    if kind == "bpe":  # new words made of seen characters still come back exactly
        unseen_words = ["the brown jugs jump over five foxes", "wie geht es?"]
        assert tok.decode(tok.encode(unseen_words)) == unseen_words
    else:  # word level: one id per word
        assert [len(ids) for ids in tok.encode(TEXTS)] == [len(t.split()) for t in TEXTS]


def test_bpe_unseen_character_is_unk_and_dropped_by_decode() -> None:
    tok = TextTokenizer.train(TEXTS, TokenizerConfig(kind="bpe", vocab_size=500, min_frequency=1))
    [ids] = tok.encode(["the \u4e2d dog"])
    assert UNK in ids
    assert tok.decode([ids]) == ["the  dog"]


def test_word_level_unseen_word_is_unk() -> None:
    tok = TextTokenizer.train(TEXTS, TokenizerConfig(kind="word", vocab_size=500, min_frequency=1))
    [ids] = tok.encode(["the zebra dog"])
    assert len(ids) == 3 and ids[1] == UNK and ids[0] != UNK and ids[2] != UNK
    assert tok.encode(["the dog"]) == [[ids[0], ids[2]]]
    assert tok.decode([ids]) == ["the dog"]  # <unk> is a special id: dropped


def test_word_level_vocab_size_and_min_frequency() -> None:
    counts = {"a": 5, "b": 4, "c": 3, "d": 1}
    texts = [word for word, n in counts.items() for _ in range(n)]
    probe = ["a b c d"]

    tok = TextTokenizer.train(texts, TokenizerConfig(kind="word", vocab_size=6, min_frequency=1))
    assert tok.vocab_size == 6  # the 4 specials + the 2 most frequent words
    a, b, c, d = tok.encode(probe)[0]
    assert UNK not in (a, b) and a != b and c == d == UNK

    tok = TextTokenizer.train(texts, TokenizerConfig(kind="word", vocab_size=100, min_frequency=3))
    assert tok.vocab_size == len(SPECIALS) + 3  # d (1 occurrence) is left out
    ids = tok.encode(probe)[0]
    assert ids[3] == UNK and UNK not in ids[:3] and len(set(ids[:3])) == 3

    tok = TextTokenizer.train(texts, TokenizerConfig(kind="word", vocab_size=100, min_frequency=1))
    assert tok.vocab_size == len(SPECIALS) + 4 and UNK not in tok.encode(probe)[0]


def test_bpe_vocab_size_is_an_upper_bound() -> None:
    texts = TEXTS * 3
    small = TextTokenizer.train(texts, TokenizerConfig(vocab_size=60, min_frequency=1))
    large = TextTokenizer.train(texts, TokenizerConfig(vocab_size=400, min_frequency=1))
    assert small.vocab_size == 60 < large.vocab_size <= 400
    # fewer merges: more (shorter) pieces for the same text, same text back
    assert sum(map(len, small.encode(TEXTS))) > sum(map(len, large.encode(TEXTS)))
    assert small.decode(small.encode(TEXTS)) == large.decode(large.encode(TEXTS))


def test_second_training_reuses_the_cached_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TokenizerConfig(kind="bpe", vocab_size=100, min_frequency=1)
    first = TextTokenizer.train(TEXTS, cfg)
    [path] = cached_files(tmp_path)
    assert path.name.startswith("bpe-")
    mtime = path.stat().st_mtime_ns

    def no_training(cfg: TokenizerConfig) -> None:
        raise AssertionError("trained again instead of loading the cached vocabulary")

    monkeypatch.setattr(tokenizer_module, "_new_tokenizer", no_training)
    second = TextTokenizer.train(list(TEXTS), TokenizerConfig(**cfg.model_dump()))
    assert cached_files(tmp_path) == [path] and path.stat().st_mtime_ns == mtime
    assert second.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    assert second.encode(TEXTS) == first.encode(TEXTS)
    # the loaded tokenizer keeps its pre-tokenizer and decoder
    assert second.decode(second.encode(TEXTS)) == [normalised(t) for t in TEXTS]
    # anything not cached still needs training
    with pytest.raises(AssertionError, match="trained again"):
        TextTokenizer.train(TEXTS[:2], cfg)


def test_other_settings_or_texts_give_another_cache_file(tmp_path: Path) -> None:
    base = {"kind": "bpe", "vocab_size": 100, "min_frequency": 1}
    variants = [
        (TEXTS, base),
        (TEXTS, {**base, "kind": "word"}),
        (TEXTS, {**base, "vocab_size": 101}),
        (TEXTS, {**base, "min_frequency": 2}),
        (TEXTS[:-1], base),
        (TEXTS[:-1] + ["the dog sleeps!"], base),
    ]
    for n, (texts, cfg) in enumerate(variants, 1):
        TextTokenizer.train(texts, TokenizerConfig(**cfg))
        assert len(cached_files(tmp_path)) == n
    TextTokenizer.train(TEXTS, TokenizerConfig(**base))  # the first again: no new file
    files = cached_files(tmp_path)
    assert len(files) == len(variants)
    assert sum(f.name.startswith("word-") for f in files) == 1
    assert not list((tmp_path / "cache" / "tokenizers").glob("*.tmp*"))


def test_explicit_cache_folder(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere" / "vocabs"
    TextTokenizer.train(TEXTS, TokenizerConfig(min_frequency=1), cache=folder)
    assert len(list(folder.glob("bpe-*.json"))) == 1
    assert cached_files(tmp_path) == []


def test_misplaced_specials_are_rejected() -> None:
    vocab = {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3, "a": 4}
    with pytest.raises(ValueError, match=r"tokenizer has '<pad>' at id 1, expected 0"):
        TextTokenizer(Tokenizer(models.WordLevel(vocab, unk_token="<unk>")))


def test_config_validation() -> None:
    assert TokenizerConfig().model_dump() == {"kind": "bpe", "vocab_size": 4000,
                                              "min_frequency": 2}
    with pytest.raises(ValidationError, match="vocab_size"):
        TokenizerConfig(vocab_size=len(SPECIALS))
    with pytest.raises(ValidationError, match="kind"):
        TokenizerConfig(kind="unigram")
    with pytest.raises(ValidationError, match="extra"):
        TokenizerConfig(size=10)


def test_whitespace_is_normalised_before_training_and_encoding() -> None:
    texts = ["double\ttab\nnl  x", "  lead and trail  ", "no\xa0break space"]
    tok = TextTokenizer.train(texts * 3, TokenizerConfig(kind="word", vocab_size=50,
                                                         min_frequency=1))
    vocab = set(tok.tokenizer.get_vocab())
    assert "▁double" in vocab and "▁tab" in vocab and not any("\t" in w for w in vocab)
    assert tok.decode(tok.encode(texts)) == ["double tab nl x", "lead and trail",
                                             "no break space"]
    # equal up to whitespace -> the same ids and the same cached vocabulary
    assert tok.encode(["double tab nl x"]) == tok.encode(["double\t tab\nnl x "])
