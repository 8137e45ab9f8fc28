"""Text-pair tasks (translation, summarization) on small local corpora: splits, truncation,
batches, metrics against the reference libraries, and errors for bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import sacrebleu
import torch
from pydantic import ValidationError
from rouge_score import rouge_scorer

from lstm_harness.tasks.base import EOS, PAD, Seq2SeqBatch
from lstm_harness.tasks.data import DataError, hash_split
from lstm_harness.tasks.summarization import SummarizationParams, SummarizationTask, lead_sentence
from lstm_harness.tasks.text import SPLITS
from lstm_harness.tasks.tokenizer import UNK
from lstm_harness.tasks.translation import TranslationParams, TranslationTask

LEXICON = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
PANGRAM = "The quick brown fox jumps over the lazy dog, pack my box with five dozen jugs."
WORD_VOCAB = {"kind": "word", "vocab_size": 200, "min_frequency": 1}
BPE_VOCAB = {"kind": "bpe", "vocab_size": 300, "min_frequency": 1}
SYSTEM_DE = Path("/usr/share/locale/de/LC_MESSAGES")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_HARNESS_CACHE", str(tmp_path / "cache"))


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` pairs with distinct sources of 1..12 words; a target is its source with some words
    upper-cased plus 0..4 extra words (so copying the source scores above zero)."""
    rng = random.Random(seed)
    out: dict[str, str] = {}
    while len(out) < n:
        src = [rng.choice(LEXICON) for _ in range(rng.randint(1, 12))]
        tgt = [w.upper() if rng.random() < 0.3 else w for w in src]
        tgt += [rng.choice(LEXICON).upper() for _ in range(rng.randint(0, 4))]
        out.setdefault(" ".join(src), " ".join(tgt))
    return list(out.items())


def write_jsonl(path: Path, pairs: list[tuple[str, str]], keys: tuple[str, str] = ("src", "tgt"),
                ) -> str:
    path.write_text("".join(json.dumps(dict(zip(keys, p, strict=True))) + "\n" for p in pairs),
                    encoding="utf-8")
    return str(path)


def translation(files: str | dict[str, str], **params: object) -> TranslationTask:
    params = {"source": "files", "files": files, "columns": ("src", "tgt"),
              "tokenizer": WORD_VOCAB, **params}
    return TranslationTask(TranslationParams.model_validate(params))


def check_batch(batch: Seq2SeqBatch, src: list[list[int]], tgt: list[list[int]]) -> None:
    """The Seq2SeqBatch conventions, and rows equal to the given (unpadded) ids."""
    assert batch.src.shape == (batch.size, int(batch.src_len.max()))
    assert batch.tgt.shape == (batch.size, int(batch.tgt_len.max()))
    assert batch.ids.shape == batch.src_len.shape == batch.tgt_len.shape == (batch.size,)
    for row in range(batch.size):
        s, t = int(batch.src_len[row]), int(batch.tgt_len[row])
        assert batch.src[row, :s].tolist() == src[row]
        assert batch.src[row, s:].eq(PAD).all()
        assert batch.tgt[row, :t].tolist() == tgt[row] + [EOS]  # no BOS, EOS last
        assert batch.tgt[row, t:].eq(PAD).all()
        assert all(token >= UNK for token in tgt[row])
    assert batch.tokens == int(batch.src_len.sum() + batch.tgt_len.sum())


# -- a shared task (built once) ------------------------------------------------------------------
TRUNC = {"max_src_len": 6, "max_tgt_len": 5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One 300-pair file, word-level vocabulary, held-out splits carved by hash, 4 buckets."""
    root = tmp_path_factory.mktemp("shared")
    pairs = make_pairs(300)
    path = write_jsonl(root / "all.jsonl", pairs)
    params = {"valid_fraction": 0.15, "test_fraction": 0.15, "n_buckets": 4, **TRUNC}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LSTM_HARNESS_CACHE", str(root / "cache"))
        task = translation(path, **params)
        task.data  # noqa: B018 - builds the splits and the vocabulary while the cache is set
        task.buckets  # noqa: B018
    return {"task": task, "pairs": pairs, "path": path, "params": params,
            "cache": str(root / "cache")}


@pytest.fixture
def task(corpus: dict[str, object]) -> TranslationTask:
    return corpus["task"]


# -- splits ----------------------------------------------------------------------------------------
def test_splits_from_a_dict_of_files(tmp_path: Path) -> None:
    pairs = make_pairs(60, seed=1)
    files = {"train": write_jsonl(tmp_path / "train.jsonl", pairs[:40]),
             "valid": write_jsonl(tmp_path / "valid.jsonl", pairs[40:48]),
             "test": write_jsonl(tmp_path / "test.jsonl", pairs[48:])}
    t = translation(files, max_valid=5)
    assert t.raw_splits() == {"train": pairs[:40], "valid": pairs[40:45], "test": pairs[48:]}
    assert [t.data[s].pairs for s in SPLITS] == [pairs[:40], pairs[40:45], pairs[48:]]

    # a missing test file: the test split is carved from train by hash, valid stays as given
    files.pop("test")
    t = translation(files, test_fraction=0.2)
    carved = hash_split(pairs[:40], 0.0, 0.2)
    assert t.raw_splits() == {"train": carved["train"], "valid": pairs[40:48],
                              "test": carved["test"]}
    assert sorted(carved["train"] + carved["test"]) == sorted(pairs[:40])
    assert carved["test"] and carved["train"]


def test_splits_carved_from_one_file(corpus: dict[str, object], tmp_path: Path) -> None:
    pairs, task = corpus["pairs"], corpus["task"]
    splits = {s: task.data[s].pairs for s in SPLITS}
    assert splits == hash_split(pairs, 0.15, 0.15)
    assert sorted(sum(splits.values(), [])) == sorted(pairs)
    sources = [{src for src, _ in splits[s]} for s in SPLITS]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert all(20 < len(splits[s]) < 80 for s in ("valid", "test"))
    # deterministic, and independent of the order of the file
    shuffled = list(pairs)
    random.Random(3).shuffle(shuffled)
    other = translation(write_jsonl(tmp_path / "shuffled.jsonl", shuffled),
                        **corpus["params"]).raw_splits()
    assert {s: set(v) for s, v in other.items()} == {s: set(v) for s, v in splits.items()}
    assert translation(corpus["path"], **corpus["params"]).raw_splits() == splits


def test_caps_on_split_sizes(corpus: dict[str, object]) -> None:
    full = corpus["task"].raw_splits()
    capped = translation(corpus["path"], **{**corpus["params"], "max_valid": 3, "max_test": 4,
                                            "max_train": 50}).raw_splits()
    assert capped == {"train": full["train"][:50], "valid": full["valid"][:3],
                      "test": full["test"][:4]}


def test_empty_split_names_the_files(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "tiny.jsonl", make_pairs(3))
    task = translation(path, valid_fraction=0.01, test_fraction=0.01)
    with pytest.raises(DataError, match=rf"files {path}: the (valid|test) split is empty"):
        task.data  # noqa: B018


# -- truncation ------------------------------------------------------------------------------------
def test_inputs_truncated_everywhere_targets_only_in_training(task: TranslationTask) -> None:
    tok = task.tokenizers[0]
    assert task.tokenizers[1] is tok  # shared vocabulary by default
    assert task.max_target_len == TRUNC["max_tgt_len"]
    cut_src = cut_tgt = long_held_out = 0
    for split in SPLITS:
        data = task.data[split]
        full_src = tok.encode([s for s, _ in data.pairs])
        full_tgt = tok.encode([t for _, t in data.pairs])
        assert data.src == [ids[: TRUNC["max_src_len"]] for ids in full_src]
        cut_src += sum(len(ids) > TRUNC["max_src_len"] for ids in full_src)
        if split == "train":
            assert data.tgt == [ids[: TRUNC["max_tgt_len"]] for ids in full_tgt]
            cut_tgt += sum(len(ids) > TRUNC["max_tgt_len"] for ids in full_tgt)
        else:
            assert data.tgt == full_tgt
            long_held_out += sum(len(ids) > TRUNC["max_tgt_len"] for ids in data.tgt)
    assert cut_src and cut_tgt and long_held_out  # the limits were exercised
    assert max(task.pool_lengths()) == TRUNC["max_tgt_len"]
    # held-out batches carry the whole references
    longest = max(int(b.tgt_len.max()) for b in task.eval_batches("test", 16))
    assert longest == max(len(ids) for ids in task.data["test"].tgt) + 1


# -- training batches ------------------------------------------------------------------------------
def test_train_batch_is_a_pure_function_of_seed_and_step(
    corpus: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = corpus["task"]
    first = task.train_batch(5, 8, seed=1)
    task.train_batch(3, 8, seed=1)
    again = task.train_batch(5, 8, seed=1)
    monkeypatch.setenv("LSTM_HARNESS_CACHE", corpus["cache"])
    fresh = translation(corpus["path"], **corpus["params"]).train_batch(5, 8, seed=1)
    for other in (again, fresh):
        assert all(torch.equal(getattr(first, f), getattr(other, f))
                   for f in ("src", "src_len", "tgt", "tgt_len", "ids"))
    steps = [task.train_batch(step, 8, seed=1).ids.tolist() for step in range(6)]
    assert len({tuple(ids) for ids in steps}) == 6
    assert task.train_batch(5, 8, seed=2).ids.tolist() != first.ids.tolist()
    train = task.data["train"]
    ids = first.ids.tolist()
    check_batch(first, [train.src[i] for i in ids], [train.tgt[i] for i in ids])
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        task.train_batch(0, 0, seed=1)


def test_buckets_partition_the_pool_by_length(task: TranslationTask) -> None:
    train = task.data["train"]
    size = [len(s) + len(t) for s, t in zip(train.src, train.tgt, strict=True)]
    buckets = task.buckets
    assert len(buckets) == 4
    assert sorted(i for b in buckets for i in b) == list(range(task.train_pool_size))
    assert all(abs(len(b) - len(buckets[0])) <= 1 for b in buckets)
    for lower, upper in zip(buckets, buckets[1:], strict=False):
        assert max(size[i] for i in lower) <= min(size[i] for i in upper)


def test_bucketed_batches_come_from_one_bucket(corpus: dict[str, object],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    task = corpus["task"]
    train = task.data["train"]
    buckets = [set(b) for b in task.buckets]
    used = set()
    for step in range(40):
        batch = task.train_batch(step, 8, seed=0)
        ids = batch.ids.tolist()
        [k] = [k for k, b in enumerate(buckets) if set(ids) <= b]
        used.add(k)
        lengths = (batch.src_len + batch.tgt_len - 1).tolist()  # tgt_len counts the EOS
        assert lengths == [len(train.src[i]) + len(train.tgt[i]) for i in ids]
        span = [len(train.src[i]) + len(train.tgt[i]) for i in buckets[k]]
        assert all(min(span) <= n <= max(span) for n in lengths)
    assert used == set(range(len(buckets)))
    # without bucketing, batches mix lengths from several buckets
    monkeypatch.setenv("LSTM_HARNESS_CACHE", corpus["cache"])
    plain = translation(corpus["path"], **{**corpus["params"], "bucket": False})
    mixed = [plain.train_batch(step, 8, seed=0).ids.tolist() for step in range(10)]
    assert any(not any(set(ids) <= b for b in buckets) for ids in mixed)


@pytest.mark.parametrize("bucket", [True, False])
def test_length_bounds_filter_training_targets(corpus: dict[str, object], bucket: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_HARNESS_CACHE", corpus["cache"])
    task = corpus["task"] if bucket else translation(
        corpus["path"], **{**corpus["params"], "bucket": False})
    size = task.pool_lengths()
    assert task.length_bounds == (min(size), max(size)) == (1, TRUNC["max_tgt_len"])
    for step in range(15):
        batch = task.train_batch(step, 8, seed=4, lengths=(2, 3))
        assert all(2 <= size[i] <= 3 for i in batch.ids.tolist())
        assert all(2 <= n - 1 <= 3 for n in batch.tgt_len.tolist())
    # bounds beyond the data fall back to the shortest targets (TaskBase.clip_lengths)
    assert task.clip_lengths((50, 60)) == (1, 1)
    batch = task.train_batch(0, 8, seed=4, lengths=(50, 60))
    assert batch.tgt_len.eq(2).all()


def test_pool_batch_and_pool_lengths_agree(task: TranslationTask) -> None:
    train = task.data["train"]
    assert task.train_pool_size == len(train.pairs) == len(task.pool_lengths())
    assert task.pool_lengths() == [len(t) for t in train.tgt]
    ids = [7, 0, 7, task.train_pool_size - 1]
    batch = task.pool_batch(ids)
    assert batch.ids.tolist() == ids
    assert (batch.tgt_len - 1).tolist() == [task.pool_lengths()[i] for i in ids]
    check_batch(batch, [train.src[i] for i in ids], [train.tgt[i] for i in ids])
    assert torch.equal(batch.src[0], batch.src[2]) and torch.equal(batch.tgt[0], batch.tgt[2])
    allowed = [3, 5, 11]
    drawn = task.draw_pool_ids(2, 30, seed=0, allowed=allowed)
    assert set(drawn) <= set(allowed) and drawn == task.draw_pool_ids(2, 30, 0, allowed=allowed)


# -- held-out batches ------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_batches_cover_each_pair_once(task: TranslationTask, split: str) -> None:
    data = task.data[split]
    batches = list(task.eval_batches(split, 8))
    ids = [i for b in batches for i in b.ids.tolist()]
    assert sorted(ids) == list(range(len(data.pairs)))
    assert [b.size for b in batches[:-1]] == [8] * (len(batches) - 1) and batches[-1].size <= 8
    src_lengths = [n for b in batches for n in b.src_len.tolist()]
    assert src_lengths == sorted(src_lengths)  # sorted by input length
    for b in batches:
        check_batch(b, [data.src[i] for i in b.ids.tolist()],
                    [data.tgt[i] for i in b.ids.tolist()])
    again = [i for b in task.eval_batches(split, 8) for i in b.ids.tolist()]
    assert again == ids


def test_eval_batches_reject_bad_arguments(task: TranslationTask) -> None:
    with pytest.raises(ValueError, match="unknown split 'train'; allowed splits: valid, test"):
        task.eval_batches("train", 8)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        task.eval_batches("test", 0)


# -- translation metrics ---------------------------------------------------------------------------
TEST_PAIRS = [
    ("the lazy dog sleeps", "the lazy dog is sleeping"),
    ("five dozen jugs", "five dozen big jugs"),
    ("pack my box", "box my pack"),
    ("Jump over the fox.", "Jumps over the brown fox."),
]


@pytest.fixture
def bpe_translation(tmp_path: Path) -> TranslationTask:
    train = make_pairs(40, seed=5) + [(PANGRAM, PANGRAM.upper())]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", train),
             "valid": write_jsonl(tmp_path / "valid.jsonl", TEST_PAIRS[:2]),
             "test": write_jsonl(tmp_path / "test.jsonl", TEST_PAIRS)}
    return translation(files, tokenizer=BPE_VOCAB)


def test_translation_score_is_sacrebleu_on_detokenized_text(
    bpe_translation: TranslationTask,
) -> None:
    task = bpe_translation
    tok = task.tokenizers[1]
    refs = task.data["test"].tgt
    assert tok.decode(refs) == [t for _, t in TEST_PAIRS]  # every character was seen
    assert task.detokenize(refs[0] + [EOS, PAD, PAD]) == TEST_PAIRS[0][1]
    assert task.detokenize(task.data["test"].src[1], side="src") == TEST_PAIRS[1][0]
    hyps = [refs[0], refs[1][:-2], refs[3], []]
    scores = task.score(hyps, refs)
    texts = tok.decode(hyps)
    assert scores == {"bleu": sacrebleu.corpus_bleu(texts, [tok.decode(refs)]).score,
                      "chrf": sacrebleu.corpus_chrf(texts, [tok.decode(refs)]).score}
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
    assert task.score(refs, refs) == pytest.approx({"bleu": 100.0, "chrf": 100.0})
    with pytest.raises(ValueError, match="1 hypotheses but 2 references"):
        task.score(hyps[:1], refs[:2])
    with pytest.raises(ValueError, match="0 hypotheses but 0 references"):
        task.score([], [])


def test_copy_source_reference_row(bpe_translation: TranslationTask) -> None:
    sources, references = [s for s, _ in TEST_PAIRS], [t for _, t in TEST_PAIRS]
    expected = {"bleu": sacrebleu.corpus_bleu(sources, [references]).score,
                "chrf": sacrebleu.corpus_chrf(sources, [references]).score}
    rows = bpe_translation.reference_scores("test")
    assert list(rows) == ["copy source"]
    assert rows["copy source"] == pytest.approx(expected)
    assert expected["bleu"] > 10 and expected["chrf"] > 10
    valid = bpe_translation.reference_scores("valid")["copy source"]
    assert valid["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(sources[:2], [references[:2]]).score)


def test_translation_reward_is_sentence_bleu_on_ids(task: TranslationTask) -> None:
    hyps = [[5, 6, 7, 8], [5, 6], [9, 10], [5, 6, 7, 8, 9], [12, 3], []]
    refs = [[5, 6, 7, 8], [5, 6, 7, 8], [11, 12], [5, 6, 7, 8, 10], [1, 23], [4]]
    rewards = task.reward(hyps, refs)
    bleu = sacrebleu.BLEU(effective_order=True, tokenize="none")
    expected = [bleu.sentence_score(" ".join(map(str, h)), [" ".join(map(str, r))]).score / 100
                for h, r in zip(hyps, refs, strict=True)]
    assert rewards == pytest.approx(expected)
    assert rewards[0] == pytest.approx(1.0)  # identical
    assert rewards[1] == pytest.approx(math.exp(-1))  # exact 1-/2-grams, brevity penalty e^(1-4/2)
    assert rewards[2] == 0.0 and rewards[4] == 0.0 and rewards[5] == 0.0  # nothing in common
    assert 0 < rewards[3] < 1
    with pytest.raises(ValueError):
        task.reward(hyps, refs[:2])


# -- summarization metrics -------------------------------------------------------------------------
SUMMARY_TEST = [
    ("the cat sat. it was happy.", "the cat sat"),
    ("dogs run fast! birds fly.", "birds fly"),
    ("one two three four", "one two"),
]


@pytest.fixture
def summarization(tmp_path: Path) -> SummarizationTask:
    train = [(f"{s}. {t}.", s) for s, t in make_pairs(30, seed=6)]
    train += [(PANGRAM + " " + " ".join(s for s, _ in SUMMARY_TEST), PANGRAM)]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", train),
             "valid": write_jsonl(tmp_path / "valid.jsonl", SUMMARY_TEST[:1]),
             "test": write_jsonl(tmp_path / "test.jsonl", SUMMARY_TEST)}
    params = {"source": "files", "files": files, "columns": ["src", "tgt"],
              "tokenizer": BPE_VOCAB}
    return SummarizationTask(SummarizationParams.model_validate(params))


@pytest.mark.parametrize(("text", "lead"), [
    ("A b. C d.", "A b."),
    ("no sentence end here", "no sentence end here"),
    ("  Wow! Great.  ", "Wow!"),
    ("Is it? Yes.", "Is it?"),
    ("First.\nSecond line", "First."),
    ("3.14 is pi. ok", "3.14 is pi."),
    ("Ends with a dot.", "Ends with a dot."),
])
def test_lead_sentence(text: str, lead: str) -> None:
    assert lead_sentence(text) == lead


def test_summarization_score_is_rouge_score(summarization: SummarizationTask) -> None:
    task = summarization
    tok = task.tokenizers[1]
    refs = task.data["test"].tgt
    assert tok.decode(refs) == [t for _, t in SUMMARY_TEST]
    hyps = tok.encode(["the cats sitting", "birds flying away", "two one"])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per_pair = [scorer.score(r, h) for r, h in zip(tok.decode(refs), tok.decode(hyps),
                                                   strict=True)]
    expected = {k: 100 * sum(s[k].fmeasure for s in per_pair) / len(per_pair)
                for k in ("rouge1", "rouge2", "rougeL")}
    scores = task.score(hyps, refs)
    assert scores == pytest.approx({**expected, "repeated_ngrams": 0.0})  # 2 trigrams, distinct
    assert 0 < scores["rouge2"] < scores["rouge1"] < 100  # stemming matched cats/cat, flying/fly
    assert task.score(refs, refs) == pytest.approx({**dict.fromkeys(expected, 100.0),
                                                    "repeated_ngrams": 0.0})
    # "a a a a b": trigrams (a a a), (a a a) again, (a a b): 1 of 3 repeats; "b b": none
    looping = tok.encode(["the the the the cat", "cat cat"])
    assert task.score(looping, refs[:2])["repeated_ngrams"] == pytest.approx(100 / 3)


def test_lead_sentence_reference_row(summarization: SummarizationTask) -> None:
    # leads: "the cat sat." (= reference), "dogs run fast!" (nothing in common),
    # "one two three four" vs "one two": ROUGE-1/L F1 2/3, ROUGE-2 F1 1/2
    row = summarization.reference_scores("test")
    assert list(row) == ["lead sentence"]
    assert row["lead sentence"] == pytest.approx(
        {"rouge1": 100 * (1 + 0 + 2 / 3) / 3, "rouge2": 100 * (1 + 0 + 1 / 2) / 3,
         "rougeL": 100 * (1 + 0 + 2 / 3) / 3, "repeated_ngrams": 0.0})
    assert summarization.reference_scores("valid")["lead sentence"] == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "repeated_ngrams": 0.0})


def lcs_f1(hyp: list[int], ref: list[int]) -> float:
    table = [[0] * (len(ref) + 1) for _ in range(len(hyp) + 1)]
    for i, a in enumerate(hyp):
        for j, b in enumerate(ref):
            table[i + 1][j + 1] = table[i][j] + 1 if a == b else max(table[i][j + 1],
                                                                        table[i + 1][j])
    lcs = table[-1][-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(hyp) + len(ref))


def test_summarization_reward_is_rouge_l_on_ids(summarization: SummarizationTask) -> None:
    hyps = [[5, 6, 7], [5, 6], [12, 3], [], [4, 4, 4]]
    refs = [[5, 7], [5, 6], [1, 23], [4], [4]]
    rewards = summarization.reward(hyps, refs)
    assert rewards == pytest.approx([0.8, 1.0, 0.0, 0.0, 0.5])
    rng = random.Random(7)
    hyps = [[rng.randint(3, 30) for _ in range(rng.randint(1, 12))] for _ in range(20)]
    refs = [[rng.randint(3, 30) for _ in range(rng.randint(1, 12))] for _ in range(20)]
    assert summarization.reward(hyps, refs) == pytest.approx(
        [lcs_f1(h, r) for h, r in zip(hyps, refs, strict=True)])


# -- bad input -------------------------------------------------------------------------------------
def test_malformed_jsonl_fails_when_data_is_first_used(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"src": "a b", "tgt": "c d"}\n{"src": "e f", "tgt": \n'
                    '{"src": "g", "tgt": "h"}\n', encoding="utf-8")
    task = translation(str(path))  # nothing is read yet
    with pytest.raises(DataError, match=r"bad\.jsonl line 2: not valid JSON"):
        task.data  # noqa: B018
    with pytest.raises(DataError, match=r"bad\.jsonl line 2"):
        task.train_batch(0, 4, seed=0)


def test_missing_columns_name_the_expected_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "en_de.jsonl", make_pairs(20), keys=("en", "de"))
    task = translation(path)
    with pytest.raises(DataError) as err:
        task.data  # noqa: B018
    msg = str(err.value)
    assert "en_de.jsonl" in msg and "missing column(s) ['src', 'tgt']" in msg
    assert "expected columns ['src', 'tgt']" in msg and "found ['en', 'de']" in msg


@pytest.mark.parametrize("params", [
    {"source": "files"},
    {"source": "files", "columns": ["src", "tgt"]},
    {"source": "files", "files": "a.jsonl"},
])
def test_files_source_needs_files_and_columns(params: dict[str, object]) -> None:
    for model in (TranslationParams, SummarizationParams):
        with pytest.raises(ValidationError, match=r"source 'files' needs 'files' .* and 'columns'"):
            model.model_validate(params)


def test_other_parameter_errors() -> None:
    with pytest.raises(ValidationError, match="source 'hub' needs 'dataset'"):
        TranslationParams(source="hub", columns=("en", "de"))
    with pytest.raises(ValidationError, match="extra"):
        TranslationParams.model_validate({"source": "files", "files": "a.jsonl",
                                          "columns": ["a", "b"], "max_len": 3})
    with pytest.raises(ValidationError, match="source"):
        TranslationParams(source="docstrings")
    with pytest.raises(ValidationError, match="max_src_len"):
        SummarizationParams(max_src_len=0)


def test_hub_source_offline_points_to_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    task = TranslationTask(TranslationParams(source="hub", dataset="bentrevett/multi30k",
                                             columns=("en", "de")))
    assert task.origin() == "hub dataset 'bentrevett/multi30k'"
    with pytest.raises(DataError) as err:
        task.data  # noqa: B018
    msg = str(err.value)
    assert "'bentrevett/multi30k'" in msg and "offline" in msg
    assert "local files" in msg and "source: files" in msg


# -- the built-in gettext corpus -------------------------------------------------------------------
@pytest.mark.skipif(not any(SYSTEM_DE.glob("*.mo")), reason="no German gettext catalogs")
def test_gettext_corpus_splits() -> None:
    task = TranslationTask(TranslationParams(max_valid=20, max_test=30, max_train=100))
    assert task.origin() == "gettext catalogs for 'de'"
    splits = task.raw_splits()
    assert [len(splits[s]) for s in SPLITS] == [100, 20, 30]
    pairs = [p for s in SPLITS for p in splits[s]]
    assert all(len(src.split()) >= 2 and src != tgt for src, tgt in pairs)
    sources = [{src for src, _ in splits[s]} for s in SPLITS]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])


# -- end to end ----------------------------------------------------------------------------------
def test_evaluate_a_model_on_a_tiny_translation_task(tmp_path: Path, one_thread: None) -> None:
    from lstm_harness.config import ModelConfig
    from lstm_harness.models.factory import build_model
    from lstm_harness.training.evaluate import evaluate

    files = {"train": write_jsonl(tmp_path / "train.jsonl", make_pairs(40, seed=8)),
             "test": write_jsonl(tmp_path / "test.jsonl", TEST_PAIRS + make_pairs(6, seed=9))}
    task = translation(files, valid_fraction=0.1, tokenizer=BPE_VOCAB, max_tgt_len=8)
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed=16, hidden=32, layers=1), task)
    metrics = evaluate(model, task, "test", 8, torch.device("cpu"))
    assert set(metrics) >= {"bleu", "chrf", "bleu_tf", "chrf_tf", "loss", "ppl"}
    assert all(math.isfinite(metrics[k]) for k in ("bleu", "chrf", "bleu_tf", "chrf_tf"))
    assert all(0 <= metrics[k] <= 100 for k in ("bleu", "chrf", "bleu_tf", "chrf_tf"))
    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0
    assert metrics["ppl"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-5)
    assert model.training  # evaluate restores the mode
