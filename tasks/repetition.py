"""Repetition in generated text: the share of n-grams that repeat an earlier n-gram of the same
output (See et al. 2017, "Get To The Point", Fig. 4: "% that are duplicates").

  repeated_ngrams = 100 * sum_y #{j : g_j(y) in {g_1(y), ..., g_{j-1}(y)}} / sum_y #g(y)

where g_1(y), ..., g_{|y|-n+1}(y) are the n-grams of output y in order, pooled over the split
(outputs shorter than n contribute no n-grams). 0 means no output repeats itself; coverage
(See et al. 2017) is meant to bring it down to the references' level.
"""

from __future__ import annotations


def repeated_ngram_counts(tokens: list[str], n: int) -> tuple[int, int]:
    """(repeated, total) n-grams of one output: an n-gram counts as repeated when the same
    n-gram occurred earlier in the output."""
    seen: set[tuple[str, ...]] = set()
    repeated = total = 0
    for start in range(len(tokens) - n + 1):
        gram = tuple(tokens[start : start + n])
        total += 1
        if gram in seen:
            repeated += 1
        seen.add(gram)
    return repeated, total


def repeated_ngram_rate(outputs: list[list[str]], n: int) -> float:
    """Percentage of the outputs' n-grams that repeat an earlier n-gram of the same output,
    pooled over the outputs; 0 when no output has n tokens."""
    repeated = total = 0
    for tokens in outputs:
        r, t = repeated_ngram_counts(tokens, n)
        repeated += r
        total += t
    return 100.0 * repeated / total if total else 0.0
