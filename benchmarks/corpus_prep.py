"""Time to prepare the built-in translation corpus (gettext en -> de): read and clean the
catalogs, split, train the BPE vocabulary, encode every split.

    python benchmarks/corpus_prep.py [--lang de] [--repeats 3] [--no-write]

"first": a fresh, empty cache directory (the vocabulary is trained); "cached": the same
directory again (the vocabulary is loaded). Every measurement runs in a fresh subprocess and
times ``TranslationTask(params).data`` (imports excluded) with the task's own breakdown by stage
(``prep_seconds``: read + clean + split, vocabulary trained or loaded, splits encoded or their
cached ids loaded). Targets (issue #4): first <= 30 s, cached <= 2 s on 2 cores.
Also: the time a hub source takes to fail offline (the user must learn at once to use local
files). The table is printed and written to benchmarks/results/corpus_prep.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(2)
from lstm_harness.tasks.translation import TranslationParams, TranslationTask

started = time.perf_counter()
task = TranslationTask(TranslationParams(lang=sys.argv[1]))
data = task.data
total = time.perf_counter() - started
print(json.dumps({"total": total, **task.prep_seconds, "vocab": task.src_vocab_size,
                  "pairs": {k: len(v.pairs) for k, v in data.items()}}))
"""


OFFLINE_CHILD = r"""
import time
from lstm_harness.tasks.data import DataError, read_hub_pairs
started = time.perf_counter()
try:
    read_hub_pairs("bentrevett/multi30k", None, ("en", "de"))
except DataError:
    pass
print(time.perf_counter() - started)
"""


def offline_hub_seconds() -> float:
    """How long a hub source takes to fail on a machine without the Hub (fresh process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", OFFLINE_CHILD], env=env, check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return float(out.stdout.strip().splitlines()[-1])


def measure(lang: str, cache: str) -> dict:
    env = {**os.environ, "LSTM_HARNESS_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD, lang], env=env, check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="de")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    rows = {"first": [], "cached": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            rows["first"].append(measure(args.lang, cache))
            rows["cached"].append(measure(args.lang, cache))
    sample = rows["first"][0]
    lines = [
        f"Corpus preparation, gettext en -> {args.lang} "
        f"({', '.join(f'{k} {v:,}' for k, v in sample['pairs'].items())} pairs, BPE vocabulary "
        f"{sample['vocab']:,}); median of {args.repeats} fresh processes "
        f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}).",
        "",
        "| cache | total s | read + clean + split s | vocabulary s | encode s | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, target in (("first", "<= 30 s"), ("cached", "<= 2 s")):
        med = {k: statistics.median(r[k] for r in rows[name])
               for k in ("total", "read", "vocabulary", "encode")}
        lines.append(f"| {name} | {med['total']:.2f} | {med['read']:.2f} | "
                     f"{med['vocabulary']:.2f} | {med['encode']:.2f} | {target} |")
    lines += ["", f"A hub source with the Hub unreachable (offline mode) fails with its message "
              f"in {offline_hub_seconds():.3f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        out = Path(__file__).parent / "results" / "corpus_prep.md"
        out.write_text(f"`python benchmarks/corpus_prep.py --lang {args.lang} --repeats "
                       f"{args.repeats}`, {time.strftime('%Y-%m-%d', time.gmtime())}\n\n" + text)


if __name__ == "__main__":
    main()
