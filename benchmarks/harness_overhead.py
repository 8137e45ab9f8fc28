"""Harness overhead: a small grid through Ray Tune + MLflow vs the same trials back to back.

    python benchmarks/harness_overhead.py [--trials 4] [--steps 300]

"harness" is the wall time of ``lstm-harness run`` on a fresh runs/ folder (Ray start-up,
MLflow database creation, trials in parallel on the machine's CPUs at one CPU each, tables and
figures). "plain" runs the same trial configs one after another in this process with no Ray
and no MLflow. The ratio harness / plain is below 1 when parallel trials win back more than
the start-up costs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.suite import load_suite
from harness.trial import Runtime, execute_trial

SUITE = """
name: overhead
description: harness overhead benchmark
tasks:
  - {{name: copy, params: {{vocab: 10, min_len: 3, max_len: 10}}}}
base:
  model: {{embed: 32, hidden: 64}}
  train: {{steps: {steps}, batch_size: 64, eval_every: 100}}
axes:
  opt:
    adam: {{}}
    sgd: {{train.optimizer: sgd, train.lr: 0.5}}
seeds: {seeds}
metrics: [exact_match]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="an even number")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    seeds = list(range(args.trials // 2))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(SUITE.format(steps=args.steps, seeds=seeds))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "harness", "run", str(path), "--no-progress"],
                       cwd=tmp, check=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
        harness_s = time.perf_counter() - started

        trials = load_suite(path).trials()
        started = time.perf_counter()
        for trial in trials:
            execute_trial(trial, Runtime(None, None, None, cpus=1))
        plain_s = time.perf_counter() - started

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{len(trials)} trials x {args.steps} steps")
    print(f"harness (Ray Tune + MLflow, parallel): {harness_s:.1f} s")
    print(f"plain (one process, back to back):     {plain_s:.1f} s")
    print(f"ratio harness / plain: {harness_s / plain_s:.2f}")


if __name__ == "__main__":
    main()
