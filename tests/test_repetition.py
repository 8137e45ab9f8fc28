"""The repeated n-gram rate (See et al. 2017, Fig. 4) against hand counts."""

from __future__ import annotations

import pytest

from lstm_harness.tasks.repetition import repeated_ngram_counts, repeated_ngram_rate


@pytest.mark.parametrize(("text", "n", "counts"), [
    ("a b c d", 2, (0, 3)),
    ("a b a b", 2, (1, 3)),            # (a b), (b a), (a b): the third repeats the first
    ("a b a b a b", 2, (3, 5)),        # (a b) x3, (b a) x2: two of each repeat
    ("x x x x", 1, (3, 4)),
    ("x x x x", 3, (1, 2)),
    ("a b", 3, (0, 0)),                # shorter than n: no n-grams
    ("", 1, (0, 0)),
])
def test_counts_by_hand(text: str, n: int, counts: tuple[int, int]) -> None:
    assert repeated_ngram_counts(text.split(), n) == counts


def test_rate_pools_over_outputs() -> None:
    outputs = [s.split() for s in ("a b a b", "c d e", "f")]
    # bigrams: (1 repeated of 3) + (0 of 2) + (0 of 0) = 1 of 5
    assert repeated_ngram_rate(outputs, 2) == pytest.approx(20.0)
    # repeats never cross outputs: the same bigram in two outputs is not a repeat
    assert repeated_ngram_rate([["a", "b"], ["a", "b"]], 2) == 0.0
    assert repeated_ngram_rate([["a"]], 2) == 0.0
