"""Cost of the training monitors: a trial's training time with monitors off vs on.

    python benchmarks/monitor_overhead.py [--steps 400] [--repeats 3] [--no-write]

One trial (copy task, 2-layer LSTM 256 wide with Luong attention, batch 64, 2 threads) runs
in-process with every monitor off, then with each configuration below, alternating, ``repeats``
times; the time measured is the training loop's wall time (``harness.training.loop.train``,
monitoring included, evaluation excluded: one validation pass at the end, the same for all).
Target (issue #7): gates and gradients on at the default interval (every 50 steps) cost at
most 10% more per step. The table is printed and written to
benchmarks/results/monitor_overhead.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import lstm_harness.trial as trial_module
from lstm_harness.suite import resolve_config
from lstm_harness.trial import Runtime, execute_trial
from lstm_harness.trial_spec import TrialSpec

CONFIGS = {
    "off": {"grad_anomaly": False},
    "gradients (every step)": {"grad_anomaly": True},
    "gates + cells + gradients, every 50": {"gates": True, "cells": True, "grad_anomaly": True},
    "+ curvature, every 50": {"gates": True, "cells": True, "grad_anomaly": True,
                              "curvature": True, "curvature_iters": 10},
}


def loop_seconds(monitor: dict, steps: int) -> float:
    """Wall time of the training loop of one trial with ``monitor``."""
    config = resolve_config({
        "model": {"embed": 64, "hidden": 256, "layers": 2,
                  "attention": {"type": "luong", "score": "general"}},
        "train": {"steps": steps, "batch_size": 64, "lr": 1e-3, "eval_every": steps,
                  "log_every": 50},
        "monitor": {**monitor, "every": 50},
    }, [])
    timed: list[float] = []
    original = trial_module.train

    def timed_train(*args, **kwargs):
        started = time.perf_counter()
        original(*args, **kwargs)
        timed.append(time.perf_counter() - started)

    trial_module.train = timed_train
    try:
        execute_trial(TrialSpec.from_dict({
            "key": "bench", "suite": "bench", "seed": 0, "variants": {},
            "task": {"name": "copy", "label": "copy",
                     "params": {"min_len": 10, "max_len": 20, "n_valid": 64, "n_test": 64}},
            "config": config}), Runtime(None, None, None, cpus=2))
    finally:
        trial_module.train = original
    return timed[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    loop_seconds(CONFIGS["off"], 20)  # warm-up
    for _ in range(args.repeats):
        for name, monitor in CONFIGS.items():
            times[name].append(loop_seconds(monitor, args.steps))
    base = statistics.median(times["off"])
    lines = [
        f"Training-loop wall time of {args.steps} steps (copy, 2 x 256 LSTM + attention, batch "
        f"64, 2 threads), median of {args.repeats} alternating runs ({platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}).", "",
        "| monitors | s | ms/step | vs off |", "| --- | ---: | ---: | ---: |"]
    for name, values in times.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.2f} | {1000 * med / args.steps:.1f} | "
                     f"{med / base:.3f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        out = Path(__file__).parent / "results" / "monitor_overhead.md"
        out.write_text(f"`python benchmarks/monitor_overhead.py --steps {args.steps} --repeats "
                       f"{args.repeats}`, {time.strftime('%Y-%m-%d', time.gmtime())}\n\n" + text)


if __name__ == "__main__":
    main()
