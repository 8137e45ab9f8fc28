"""Subword (BPE) or word-level vocabularies trained on a task's training split, with HF
``tokenizers``, cached on disk.

BPE: byte-pair encoding (Sennrich, Haddow & Birch 2016, "Neural Machine Translation of Rare
Words with Subword Units"): start from characters and merge the most frequent adjacent pair
until the vocabulary has ``vocab_size`` entries. Word level: the ``vocab_size`` most frequent
whitespace-separated words. Both split text on whitespace first with SentencePiece's meta
symbol (Kudo & Richardson 2018); texts are whitespace-normalised first (runs of spaces, tabs,
newlines and no-break spaces become one space, ends stripped), so decoding gives back the
normalised text exactly; characters or words never seen in training become ``<unk>``.

Ids follow the Task API: 0 ``<pad>``, 1 ``<s>`` (BOS), 2 ``</s>`` (EOS), 3 ``<unk>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lstm_harness.tasks.base import BOS, EOS, N_SPECIAL, PAD, TaskParams
from lstm_harness.tasks.data import cache_dir, stable_hash

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
UNK = 3
assert SPECIALS.index("<pad>") == PAD and SPECIALS.index("<s>") == BOS
assert SPECIALS.index("</s>") == EOS and UNK == N_SPECIAL


def normalize(text: str) -> str:
    """Whitespace-normalised text: ``" ".join(text.split())``."""
    return " ".join(text.split())


class TokenizerConfig(TaskParams):
    """``kind``: bpe | word; ``vocab_size`` (special ids included); ``min_frequency``: a merge
    (BPE) or word (word level) needs at least this many occurrences."""

    kind: Literal["bpe", "word"] = "bpe"
    vocab_size: int = Field(4000, ge=len(SPECIALS) + 1)
    min_frequency: int = Field(2, ge=1)


def _new_tokenizer(cfg: TokenizerConfig) -> tuple[Tokenizer, object]:
    if cfg.kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                      special_tokens=SPECIALS, show_progress=False)
    else:
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        trainer = trainers.WordLevelTrainer(vocab_size=cfg.vocab_size,
                                            min_frequency=cfg.min_frequency,
                                            special_tokens=SPECIALS, show_progress=False)
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok, trainer


class TextTokenizer:
    """A trained vocabulary: ``encode`` text -> ids (no BOS/EOS), ``decode`` ids -> text."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        for i, name in enumerate(SPECIALS):
            if tokenizer.token_to_id(name) != i:
                raise ValueError(f"tokenizer has '{name}' at id {tokenizer.token_to_id(name)}, "
                                 f"expected {i}")

    @classmethod
    def train(cls, texts: list[str], cfg: TokenizerConfig,
              cache: Path | None = None) -> TextTokenizer:
        """Train on ``texts`` or load the cached vocabulary of the same texts and settings."""
        texts = [normalize(t) for t in texts]
        key = stable_hash(cfg.model_dump(), stable_hash(*texts))
        path = (cache or cache_dir() / "tokenizers") / f"{cfg.kind}-{key}.json"
        if path.exists():
            return cls(Tokenizer.from_file(str(path)))
        tok, trainer = _new_tokenizer(cfg)
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(tok)}")
        tok.save(str(tmp))
        tmp.replace(path)  # atomic: parallel trials may write the same vocabulary
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        texts = [normalize(t) for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Text of each id sequence; special ids (padding, BOS, EOS, unknown) are dropped."""
        return self.tokenizer.decode_batch(ids, skip_special_tokens=True)

    def token_text(self, token: int) -> str:
        return self.tokenizer.id_to_token(token) or ""
