"""Training speed and memory of every LSTMStack cell / regulariser / skip variant vs nn.LSTM.

    python benchmarks/cells.py [--quick] [--only NAME ...] [--no-write] [--before FILE]
                               [--threads N]

Each variant is built through ``ModelConfig`` (the stack picks the fused kernel or the custom
time loop itself; the "path" column says which it took) and timed on forward + backward in
training mode: x [B, T, X] (requires grad, as embeddings below it would) -> outputs, then
``outputs.backward(g)`` with a fixed random g; gradients are dropped (set to None) between
repeats, as ``zero_grad`` does. tokens/s = B * T / median seconds per forward + backward, after
a warm-up. The ratio ("x nn.LSTM") is the variant's speed over that of nn.LSTM with the same
layers / directions at the same size: the two run in alternating blocks of 3 (the first of each
block untimed) in the same process, and the ratio is the median over blocks of the ratio of
their times in neighbouring blocks, so that load from other processes on a shared machine
hits both alike.

Peak MB: every (variant, size) runs in a fresh subprocess. After the warm-up, glibc's free memory
is handed back to the OS (malloc_trim), VmHWM is reset by writing 5 to /proc/self/clear_refs,
one more forward + backward of the variant runs, and peak MB = VmHWM - VmRSS at the reset
(activations, saved tensors and gradients of that step, plus allocator fragmentation; the
weights are not counted).

The custom layer's time loop is the compiled C++ loop where it builds, else the PyTorch loop
(``LSTM_HARNESS_LOOP=python`` forces it); the report names the one that ran. ``--before FILE``
adds, per size, the ratio column of an earlier report (e.g. a run with the PyTorch loop) as
"before".

The table is printed and written to benchmarks/results/cells.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = [(64, 50, 256), (32, 100, 64)]  # (B, T, X = H)
THREADS = 2
BLOCK = 3
RESULTS = Path(__file__).resolve().parent / "results" / "cells.md"

# name -> (ModelConfig overrides, baseline nn.LSTM: (layers, bidirectional), note)
VARIANTS: dict[str, tuple[dict, tuple[int, bool], str]] = {
    "lstm": ({}, (1, False), ""),
    "layernorm": ({"cell": "layernorm"}, (1, False), ""),
    "dropout_io": ({"dropout": {"input": 0.3, "output": 0.3}}, (1, False), "p = 0.3"),
    "dropout_io_variational": (
        {"dropout": {"input": 0.3, "output": 0.3, "variational": True}}, (1, False), "p = 0.3"),
    "recurrent": ({"dropout": {"recurrent": 0.25}}, (1, False), "p = 0.25, per step"),
    "recurrent_variational": (
        {"dropout": {"recurrent": 0.25, "variational": True}}, (1, False),
        "p = 0.25, one mask per sequence"),
    "zoneout_hc": ({"dropout": {"zoneout": 0.1, "zoneout_c": 0.1}}, (1, False),
                   "p = 0.1 on h and on c"),
    "weight_drop": ({"dropout": {"weight_drop": 0.5}}, (1, False), "p = 0.5"),
    "highway": ({"skip": "highway"}, (1, False), ""),
    "residual_step": ({"skip": "residual_step"}, (1, False), ""),
    "residual": ({"skip": "residual", "layers": 2}, (2, False), "2 layers"),
    "dense": ({"skip": "dense", "layers": 2}, (2, False), "2 layers"),
    "bidirectional": ({"bidirectional": True}, (1, True), ""),
    "bidirectional_layernorm": ({"bidirectional": True, "cell": "layernorm"}, (1, True), ""),
    "self_attention": ({"attention": {"type": "self"}}, (1, False), "attention type self"),
}


def build(name: str, hidden: int):
    """The module for a variant name, or nn.LSTM for 'nn.LSTM:<layers>:<bi>'; and its path."""
    from torch import nn

    if name.startswith("nn.LSTM"):
        _, layers, bi = name.split(":")
        return nn.LSTM(hidden, hidden, int(layers), batch_first=True,
                       bidirectional=bi == "True"), "nn.LSTM"
    from lstm_harness.config import ModelConfig
    from lstm_harness.models.layers import FusedLSTMLayer
    from lstm_harness.models.seq2seq import rates_from
    from lstm_harness.models.stack import LSTMStack

    cfg = ModelConfig(hidden=hidden, embed=hidden, **VARIANTS[name][0])
    self_attention = cfg.attention is not None and cfg.attention.type == "self"
    stack = LSTMStack(hidden, cfg, rates_from(cfg), cfg.bidirectional, self_attention)
    fused = all(isinstance(layer, FusedLSTMLayer) for layer in stack.layers)
    return stack, "fused" if fused else "custom"


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(name: str, size: tuple[int, int, int], budget_s: float) -> dict:
    """Runs in its own process: tokens/s and peak MB of one (variant, size), and the variant's
    speed relative to its nn.LSTM baseline timed alternately with it in this process."""
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    batch, steps, hidden = size
    x = torch.randn(batch, steps, hidden, requires_grad=True)

    def runner(module):
        module.train()
        with torch.no_grad():
            grad = torch.randn_like(module(x)[0])

        def fwd_bwd() -> None:
            out = module(x)[0]
            out.backward(grad)
            x.grad = None
            for p in module.parameters():
                p.grad = None
        return fwd_bwd

    module, path = build(name, hidden)
    runs = {"variant": runner(module)}
    if name in VARIANTS:
        runs["baseline"] = runner(build(baseline_name(name), hidden)[0])
    for run in runs.values():
        started, warm = time.perf_counter(), 0
        while warm < 3 or (time.perf_counter() - started < 0.5 and warm < 20):
            run()
            warm += 1

    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed memory back to the OS, then reset VmHWM
    Path("/proc/self/clear_refs").write_text("5")
    base = rss_kb("VmRSS")
    runs["variant"]()
    peak_mb = (rss_kb("VmHWM") - base) / 1024

    # blocks of BLOCK runs of each, the first of a block not timed: each module runs in its own
    # steady state (caches, allocator) while load from elsewhere hits both alike
    times: dict[str, list[float]] = {k: [] for k in runs}
    started = time.perf_counter()
    while len(times["variant"]) < 4 or (time.perf_counter() - started < budget_s
                                        and len(times["variant"]) < 30):
        for key, run in runs.items():
            run()
            for _ in range(BLOCK - 1):
                t0 = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - t0)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = 1.0
    if "baseline" in times:  # the median over blocks of the ratio within a block
        per_block = [[sum(t[i : i + BLOCK - 1]) for i in range(0, len(t), BLOCK - 1)]
                     for t in (times["baseline"], times["variant"])]
        ratio = statistics.median(b / v for b, v in zip(*per_block, strict=True))
    return {"name": name, "path": path, "size": list(size),
            "tokens_s": batch * steps / median["variant"], "ratio": ratio,
            "repeats": len(times["variant"]), "peak_mb": peak_mb}


def run_one(name: str, size: tuple[int, int, int], budget_s: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--child", name, ",".join(map(str, size)),
           "--budget", str(budget_s), "--threads", str(THREADS)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def baseline_name(variant: str) -> str:
    layers, bi = VARIANTS[variant][1]
    return f"nn.LSTM:{layers}:{bi}"


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {THREADS} thread{'s' * (THREADS != 1)}, "
            f"load average {load:.2f} at start")


def earlier_ratios(path: Path) -> dict[str, list[str]]:
    """variant -> its 'x nn.LSTM' cells (one per size) in an earlier report's table."""
    found: dict[str, list[str]] = {}
    head: list[str] = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "variant":
            head = cells
        elif head and len(cells) == len(head) and not set(cells[0]) <= {"-"}:
            found[cells[0]] = [c for c, h in zip(cells, head, strict=True) if h == "x nn.LSTM"]
    return found


def table(rows: dict, variants: list[str], before: dict[str, list[str]] | None = None) -> str:
    sizes = [tuple(s) for s in SIZES]
    head = ["variant", "path"]
    for b, t, h in sizes:
        head += [f"tok/s B={b} T={t} H={h}", "x nn.LSTM"] + (["before"] if before else [])
    head += [f"peak MB (H={sizes[0][2]})", f"peak MB (H={sizes[1][2]})", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    baselines = sorted({baseline_name(v) for v in variants})
    for name in baselines + variants:
        cells = [f"{name}", rows[(name, sizes[0])]["path"]]
        for k, size in enumerate(sizes):
            r = rows[(name, size)]
            cells += [f"{r['tokens_s']:,.0f}", f"{r['ratio']:.2f}"]
            if before:
                earlier = before.get(name, [])
                cells.append(earlier[k] if k < len(earlier) else "")
        cells += [f"{rows[(name, s)]['peak_mb']:.0f}" for s in sizes]
        cells.append(VARIANTS[name][2] if name in VARIANTS else "baseline")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument("--budget", type=float, default=3.0, help="timing seconds per run")
    parser.add_argument("--quick", action="store_true", help="budget 0.7 s per run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--before", type=Path, help="an earlier report: its ratios as 'before'")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"intra-op threads of every run (default {THREADS})")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    THREADS = args.threads
    if args.child:
        size = tuple(int(v) for v in args.child[1].split(","))
        print(json.dumps(measure(args.child[0], size, args.budget)))
        return
    budget = 0.7 if args.quick else args.budget
    variants = args.only or list(VARIANTS)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    machine = machine_line()
    before = earlier_ratios(args.before) if args.before else None
    from lstm_harness.models.compiled_loop import backend

    loop = backend()
    started = time.perf_counter()
    rows = {}
    names = sorted({baseline_name(v) for v in variants}) + variants
    for name in names:
        for size in SIZES:
            r = run_one(name, size, budget)
            rows[(name, size)] = r
            print(f"{name:26s} {r['path']:8s} B,T,H={size}: {r['tokens_s']:9,.0f} tok/s "
                  f"x{r['ratio']:.2f} ({r['repeats']} repeats), peak {r['peak_mb']:.0f} MB",
                  file=sys.stderr)
    text = table(rows, variants, before)
    command = "python " + " ".join(["benchmarks/cells.py"] + sys.argv[1:])
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report = (f"# LSTMStack cell variants vs nn.LSTM: forward + backward training speed\n\n"
              f"Machine: {machine}, {load_end:.2f} at the end.\n\n"
              f"Custom layers' time loop: {loop}.\n\nCommand: `{command}` "
              f"({time.perf_counter() - started:.0f} s).\n\n"
              f"1 layer unless the notes say otherwise; each ratio is to nn.LSTM with the same "
              f"layers and directions at the same size, timed in alternating blocks with the "
              f"variant in the same process. Method: see the docstring of "
              f"benchmarks/cells.py.\n\n{text}\n")
    print(report)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report)


if __name__ == "__main__":
    main()
