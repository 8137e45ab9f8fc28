"""Throughput of the batched sentence rewards (harness/training/rewards.py) against the
per-sentence reference libraries on the same pairs, on one core.

    python benchmarks/rewards.py [--repeats 9] [--batches 10] [--no-write]

Data (seeded): batches of 64 sources x 5 candidates = 320 hypothesis/reference pairs; each
source has a reference of 20..60 token ids drawn from a Zipf(1) distribution over 1,000 ids, each
candidate is a copy of its reference (truncated or extended with random ids to its own length of
20..60) with 30% of its tokens replaced by random ids, so n-gram matches are frequent.
Libraries: sacrebleu ``BLEU(effective_order=True, tokenize="none").sentence_score(h, [r])`` per
pair, rouge-score ``RougeScorer(["rouge1", "rouge2", "rougeL"]).score(r, h)`` per pair (all three
in one call, as one normally would); "all four" is the sum of both. Ours: ``sentence_bleu``,
``rouge_n(n=1)``, ``rouge_n(n=2)``, ``rouge_l`` and ``token_rewards`` (all four sharing the match
masks), each given the 64 references once (``ref`` [64, L]: one reference for each 5
consecutive candidates, as sequence-level training passes them). The last two rows give
``sentence_bleu`` a [320, L] reference tensor instead (the repeat inside the timing): each
reference repeated for its 5 candidates (the rewards find the runs of equal rows and look each
reference up once), and the same with the padding after each reference set to its row's
number, so that no runs are found and every pair is done on its own (no sharing).
``torch.set_num_threads(1)``. Every repeat times each method once over all batches, the
methods interleaved so that background load hits them alike, after one warm-up repeat; the
table gives the median over repeats of pairs/s (wall clock), and the speed-ups are the medians
of the per-repeat ratios, of wall-clock time and of the thread's CPU time (the latter leaves
out the time the process waits for a core under background load). Target: >= 50x the
per-sentence libraries. The table is printed and written to benchmarks/results/rewards.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU

from lstm_harness.training.rewards import rouge_l, rouge_n, sentence_bleu, token_rewards

SOURCES, CANDIDATES, VOCAB, MIN_LEN, MAX_LEN, NOISE = 64, 5, 1000, 20, 60, 0.3

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def make_batch(seed: int) -> Batch:
    """hyp [320, 60], hyp_len [320], ref [64, 60], ref_len [64] (padding: random ids); reference
    s serves candidates 5s .. 5s + 4, as sequence-level training passes them."""
    g = torch.Generator().manual_seed(seed)
    n = SOURCES * CANDIDATES
    zipf = 1.0 / torch.arange(1, VOCAB + 1, dtype=torch.float64)

    def ids(rows: int) -> torch.Tensor:
        return torch.multinomial(zipf, rows * MAX_LEN, replacement=True, generator=g).view(
            rows, MAX_LEN)

    ref = ids(SOURCES)
    ref_len = torch.randint(MIN_LEN, MAX_LEN + 1, (SOURCES,), generator=g)
    hyp_len = torch.randint(MIN_LEN, MAX_LEN + 1, (n,), generator=g)
    pos = torch.arange(MAX_LEN)
    hyp = torch.where(pos < ref_len.repeat_interleave(CANDIDATES).unsqueeze(1),
                      ref.repeat_interleave(CANDIDATES, 0), ids(n))
    hyp = torch.where(torch.rand(n, MAX_LEN, generator=g) < NOISE, ids(n), hyp)
    return hyp, hyp_len, ref, ref_len


def unshared(ref: torch.Tensor, ref_len: torch.Tensor) -> torch.Tensor:
    """The references repeated for their candidates, with the padding after each length set to
    the row's number: the same pairs, but the rows are no longer runs of equal rows."""
    rows = ref.repeat_interleave(CANDIDATES, 0)
    pad = torch.arange(rows.shape[1]) >= ref_len.repeat_interleave(CANDIDATES).unsqueeze(1)
    return torch.where(pad, torch.arange(len(rows)).unsqueeze(1), rows)


def texts(batch: Batch) -> list[tuple[str, str]]:
    """(hypothesis, reference) strings of every candidate."""
    hyp, hyp_len, ref, ref_len = (t.tolist() for t in batch)
    refs = [" ".join(map(str, r[:rl])) for r, rl in zip(ref, ref_len, strict=True)]
    return [(" ".join(map(str, h[:hl])), refs[i // CANDIDATES])
            for i, (h, hl) in enumerate(zip(hyp, hyp_len, strict=True))]


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    batches = [make_batch(seed) for seed in range(args.batches)]
    pairs = [texts(b) for b in batches]
    n_pairs = sum(len(p) for p in pairs)
    bleu = BLEU(effective_order=True, tokenize="none")
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)

    def ours(fn: Callable[[Batch], object]) -> Callable[[], None]:
        return lambda: [fn(b) for b in batches]

    methods: dict[str, Callable[[], object]] = {
        "sacrebleu": lambda: [bleu.sentence_score(h, [r]) for p in pairs for h, r in p],
        "rouge-score": lambda: [scorer.score(r, h) for p in pairs for h, r in p],
        "sentence_bleu": ours(lambda b: sentence_bleu(*b)),
        "rouge_n(1)": ours(lambda b: rouge_n(*b, n=1)),
        "rouge_n(2)": ours(lambda b: rouge_n(*b, n=2)),
        "rouge_l": ours(lambda b: rouge_l(*b)),
        "token_rewards (all four)": ours(lambda b: token_rewards(*b)),
        "sentence_bleu, reference repeated per candidate": ours(lambda b: sentence_bleu(
            b[0], b[1], b[2].repeat_interleave(CANDIDATES, 0),
            b[3].repeat_interleave(CANDIDATES))),
        "sentence_bleu, 320 unshared references": ours(lambda b: sentence_bleu(
            b[0], b[1], unshared(b[2], b[3]), b[3].repeat_interleave(CANDIDATES))),
    }
    baseline = {"sentence_bleu": ("sacrebleu",), "rouge_n(1)": ("rouge-score",),
                "rouge_n(2)": ("rouge-score",), "rouge_l": ("rouge-score",),
                "token_rewards (all four)": ("sacrebleu", "rouge-score"),
                "sentence_bleu, reference repeated per candidate": ("sacrebleu",),
                "sentence_bleu, 320 unshared references": ("sacrebleu",)}
    seconds: dict[str, list[float]] = {k: [] for k in methods}  # wall clock
    cpu: dict[str, list[float]] = {k: [] for k in methods}  # this thread's CPU time
    for rep in range(args.repeats + 1):
        for name, fn in methods.items():
            started, started_cpu = time.perf_counter(), time.thread_time()
            fn()
            if rep:  # the first round is the warm-up
                seconds[name].append(time.perf_counter() - started)
                cpu[name].append(time.thread_time() - started_cpu)

    def rate(name: str) -> float:
        return n_pairs / statistics.median(seconds[name])

    lines = [
        f"Sentence rewards on token ids, {args.batches} batches of {SOURCES} sources x "
        f"{CANDIDATES} candidates ({n_pairs:,} pairs of {MIN_LEN}..{MAX_LEN} tokens, Zipf ids "
        f"over {VOCAB:,}); one thread; median of {args.repeats} interleaved repeats after a "
        f"warm-up ({cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}; load average "
        f"{os.getloadavg()[0]:.1f} at the end).",
        "",
        "| method | pairs/s | reference (per pair) | reference pairs/s | speed-up | "
        "speed-up in CPU time | target |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for name in ("sacrebleu", "rouge-score"):
        lines.append(f"| {name} (per pair) | {rate(name):,.0f} | | | | | |")

    def speedup(times: dict[str, list[float]], name: str, refs: tuple[str, ...]) -> float:
        return statistics.median(sum(times[r][i] for r in refs) / times[name][i]
                                 for i in range(args.repeats))

    for name, refs in baseline.items():
        ref_rate = n_pairs / statistics.median(
            [sum(seconds[r][i] for r in refs) for i in range(args.repeats)])
        lines.append(f"| {name} | {rate(name):,.0f} | {' + '.join(refs)} | {ref_rate:,.0f} | "
                     f"{speedup(seconds, name, refs):.0f}x | {speedup(cpu, name, refs):.0f}x | "
                     ">= 50x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        out = Path(__file__).parent / "results" / "rewards.md"
        out.write_text(f"`python benchmarks/rewards.py --repeats {args.repeats} --batches "
                       f"{args.batches}`, {time.strftime('%Y-%m-%d', time.gmtime())}\n\n" + text)


if __name__ == "__main__":
    main()
