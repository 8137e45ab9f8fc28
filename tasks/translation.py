"""Machine translation: English -> another language.

Built-in corpus (``source: gettext``, no download): the human translations of program messages
in the machine's gettext catalogs, ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo`` (English msgid
-> translated msgstr), cleaned in ``tasks/corpora.py`` (single-line pairs, duplicates and pure
format strings removed); by default pairs with a one-word English side (mostly names of
languages, countries and currencies) and untranslated pairs are dropped too.
Or local files / a hub dataset (for example ``bentrevett/multi30k`` with
``columns: [en, de]``; WMT-style ``columns: [translation.en, translation.de]``).

Metrics on detokenized text with sacrebleu (Post 2018): corpus BLEU (Papineni et al. 2002)
and chrF (Popovic 2015), both 0-100. Reference row: copy the source sentence (strong on program
messages, which repeat option names, paths and format strings).
Reward: sentence BLEU with effective order on the token ids joined by spaces.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import sacrebleu
from pydantic import Field

from lstm_harness.tasks.base import Direction, TaskParams
from lstm_harness.tasks.corpora import gettext_pairs
from lstm_harness.tasks.data import Pair
from lstm_harness.tasks.text import TextPairTask, TextParams


class TranslationParams(TextParams):
    source: Literal["gettext", "files", "hub"] = "gettext"
    lang: str = Field("de", description="target language of the gettext catalogs "
                      "(de, fr, sv, es, ...)")
    max_words: int = Field(30, ge=1, description="gettext pairs longer than this many "
                           "words on either side are dropped")
    min_words: int = Field(2, ge=1, description="gettext pairs whose English side has fewer "
                           "words are dropped (mostly names of languages and countries)")
    drop_identical: bool = Field(True, description="drop gettext pairs left untranslated "
                                 "(target = source)")


class TranslationTask(TextPairTask):
    """English -> ``lang`` translation; see the module docstring."""

    name: ClassVar[str] = "translation"
    Params: ClassVar[type[TaskParams]] = TranslationParams
    metrics: ClassVar[dict[str, Direction]] = {"bleu": "max", "chrf": "max"}
    default_reward: ClassVar[str | None] = "bleu"

    params: TranslationParams

    def __init__(self, params: TranslationParams | None = None) -> None:
        super().__init__(params if params is not None else TranslationParams())

    def builtin_pairs(self) -> list[Pair]:
        p = self.params
        return [(src, tgt) for src, tgt in gettext_pairs(p.lang, max_words=p.max_words)
                if len(src.split()) >= p.min_words and not (p.drop_identical and src == tgt)]

    def origin(self) -> str:
        if self.params.source == "gettext":
            return f"gettext catalogs for '{self.params.lang}'"
        return super().origin()

    def score_texts(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
                "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score}

    def baselines(self, sources: list[str]) -> dict[str, list[str]]:
        return {"copy source": list(sources)}

    def reward(self, hyps: list[list[int]], refs: list[list[int]]) -> list[float]:
        """Sentence BLEU / 100 (sacrebleu, effective order, no tokenization) of the ids."""
        bleu = _sentence_bleu()
        return [bleu.sentence_score(" ".join(map(str, h)), [" ".join(map(str, r))]).score / 100
                for h, r in zip(hyps, refs, strict=True)]


def _sentence_bleu() -> sacrebleu.BLEU:
    return sacrebleu.BLEU(effective_order=True, tokenize="none")
