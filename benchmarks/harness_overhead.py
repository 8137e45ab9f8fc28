"""Harness overhead: a suite of equal trials through Ray Tune + MLflow against the ideal.

    python benchmarks/harness_overhead.py [--trials 8] [--steps 600] [--plain] [--no-write]

"harness" is the wall time of ``lstm-harness run`` on a fresh runs/ folder: Python start-up and
imports, Ray start-up, MLflow database creation, the trials in parallel at one CPU each, then
tables and figures. "ideal" is the sum of the trials' own times (``cost.wall_time_s``, measured
inside each trial from its start to its test metrics) divided by the machine's CPUs: what a
perfect scheduler with no start-up would take. The target (issue #8) is harness <= 1.2 x ideal
for 8 trials on 2 CPUs.

Where the rest goes, from the MLflow run times and Ray Tune's per-trial results:
- start-up: from the command's start to the first trial's MLflow run;
- scheduling: per CPU slot, the time between one trial's end and the next trial's start;
- actor reuse: the number of distinct worker processes that ran the trials (Tune's
  ``reuse_actors``: a worker process trains trial after trial without a new start-up);
- finish: from the last trial's end to the command's exit (tables, figures, RUN.md).
``--plain`` also runs the same trial configs back to back in this process (no Ray, no MLflow).
The table is printed and written to benchmarks/results/harness_overhead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.suite import load_suite
from lstm_harness.tracking import trial_runs
from lstm_harness.trial import Runtime, execute_trial

OUT = Path(__file__).parent / "results" / "harness_overhead.md"

SUITE = """
name: overhead
description: harness overhead benchmark
tasks:
  - {{name: copy, params: {{vocab: 10, min_len: 3, max_len: 10}}}}
base:
  model: {{embed: 32, hidden: 64}}
  train: {{steps: {steps}, batch_size: 64, eval_every: 200, log_every: 50}}
axes:
  opt:
    adam: {{}}
    sgd: {{train.optimizer: sgd, train.lr: 0.5}}
seeds: {seeds}
metrics: [exact_match]
"""


def finished_runs(db: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("overhead")
    return list(trial_runs(client, experiment.experiment_id, "overhead", "FINISHED"))


def worker_pids(ray_dir: Path) -> set[int]:
    """Worker process ids of the trials, from Tune's per-trial result.json lines."""
    pids = set()
    for path in ray_dir.glob("*/*/result.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                pids.add(json.loads(line)["pid"])
    return pids


def slot_gaps(spans: list[tuple[float, float]], slots: int) -> float:
    """Sum of idle gaps between consecutive trials when ``spans`` (start, end) are packed onto
    ``slots`` CPU slots in start order (each trial takes the slot that freed first)."""
    free = [min(s for s, _ in spans)] * slots
    total = 0.0
    for start, end in sorted(spans):
        slot = min(range(slots), key=free.__getitem__)
        total += max(0.0, start - free[slot])
        free[slot] = end
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="an even number")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--plain", action="store_true",
                        help="also time the trials back to back without Ray and MLflow")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))  # what Ray sizes its pool from, not os.cpu_count()
    seeds = list(range(args.trials // 2))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(SUITE.format(steps=args.steps, seeds=seeds))
        started_wall = time.time()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "harness", "run", str(path), "--no-progress"],
                       cwd=tmp, check=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
        harness_s = time.perf_counter() - started
        ended_wall = started_wall + harness_s
        runs = finished_runs(Path(tmp) / "runs" / "mlflow.db")
        pids = worker_pids(Path(tmp) / "runs" / "ray")
        own = [r.data.metrics[rs.COST_WALL] for r in runs]
        spans = [(r.info.start_time / 1000, r.info.end_time / 1000) for r in runs]
        plain_s = None
        if args.plain:
            trials = load_suite(path).trials()
            started = time.perf_counter()
            for trial in trials:
                execute_trial(trial, Runtime(None, None, None, cpus=1))
            plain_s = time.perf_counter() - started

    ideal = sum(own) / cpus
    startup = min(s for s, _ in spans) - started_wall
    finish = ended_wall - max(e for _, e in spans)
    gaps = slot_gaps(spans, cpus)
    rows = [
        ("trials x steps", f"{len(runs)} x {args.steps}"),
        ("trial's own time, mean (min-max)",
         f"{sum(own) / len(own):.1f} s ({min(own):.1f}-{max(own):.1f})"),
        (f"ideal = sum of own times / {cpus} CPUs", f"{ideal:.1f} s"),
        ("harness wall time (`lstm-harness run`)", f"{harness_s:.1f} s"),
        ("**harness / ideal** (target <= 1.2)", f"**{harness_s / ideal:.2f}**"),
        ("start-up: command start -> first trial's MLflow run", f"{startup:.1f} s"),
        ("scheduling gaps between trials, summed over CPU slots", f"{gaps:.1f} s"),
        ("finish: last trial's end -> exit (tables, figures)", f"{finish:.1f} s"),
        ("worker processes that ran the trials (actor reuse)", f"{len(pids)}"),
    ]
    if plain_s is not None:
        rows.append(("plain: same trials back to back, no Ray or MLflow", f"{plain_s:.1f} s"))
    load = os.getloadavg()[0]
    text = "\n".join([
        f"`python benchmarks/harness_overhead.py --trials {args.trials} --steps {args.steps}"
        f"{' --plain' if args.plain else ''}`, {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
        f"{platform.machine()}, {cpus} CPUs, Python {platform.python_version()}, torch "
        f"{torch.__version__}; load average {load:.1f} at the end.",
        "",
        "| quantity | value |",
        "| --- | ---: |",
        *(f"| {k} | {v} |" for k, v in rows),
    ])
    print(text)
    if not args.no_write:
        OUT.write_text(text + "\n")


if __name__ == "__main__":
    main()
