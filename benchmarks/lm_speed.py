"""Training speed of the LanguageModel head against a plain nn.LSTM language model.

    python benchmarks/lm_speed.py [--blocks N] [--no-write]

A training step = forward, cross entropy over every target, backward and an SGD update, on a
fixed batch [B, T] of token ids. The baseline is the textbook model of the same size:
nn.Embedding -> nn.LSTM (num_layers L) -> nn.Linear, no dropout. Each harness variant runs in
alternating blocks with the baseline in the same process (3 steps a block, the first untimed);
the ratio is the median over blocks of baseline time / variant time in neighbouring blocks, so
load from other processes hits both alike. tokens/s = B T / median step time.

Settings: the word-level "small" model of Zaremba et al. (2014) (2 layers of 200, bptt 35,
batch 20) over a 7,386-word vocabulary (the built-in corpus's), and a character-level model
(1 layer of 256, bptt 100, batch 32, 50 symbols). The table goes to
benchmarks/results/lm_speed.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.models.language_model import LanguageModel

RESULTS = Path(__file__).resolve().parent / "results" / "lm_speed.md"
THREADS = 2
BLOCK = 3
SETTINGS = {  # name -> (vocab, embed, hidden, layers, batch, bptt)
    "word (Zaremba small)": (7386, 200, 200, 2, 20, 35),
    "char": (50, 64, 256, 1, 32, 100),
}
VARIANTS = {  # name -> ModelConfig overrides
    "harness LM": {},
    "+ AWD regularisers": {"dropout": {"input": 0.4, "output": 0.3, "variational": True,
                                       "weight_drop": 0.5, "embedding": 0.1}},
    "+ zoneout 0.1 (custom loop)": {"dropout": {"zoneout": 0.1, "zoneout_c": 0.1}},
}


class PlainLM(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embedding(tokens))[0])


def step_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logits_of = model if isinstance(model, PlainLM) else (lambda x: model.predict(x)[0])

    def step() -> None:
        logits = logits_of(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def timed_block(step) -> float:
    step()  # untimed
    started = time.perf_counter()
    for _ in range(BLOCK - 1):
        step()
    return (time.perf_counter() - started) / (BLOCK - 1)


def compare(setting: tuple, overrides: dict, blocks: int) -> tuple[float, float, float]:
    vocab, embed, hidden, layers, batch, bptt = setting
    torch.manual_seed(0)
    inputs = torch.randint(0, vocab, (batch, bptt))
    targets = torch.randint(0, vocab, (batch, bptt))
    base = step_fn(PlainLM(vocab, embed, hidden, layers), inputs, targets)
    cfg = ModelConfig(embed=embed, hidden=hidden, layers=layers, **overrides)
    ours = LanguageModel(cfg, vocab).train()
    variant = step_fn(ours, inputs, targets)
    base(), variant()  # warm-up
    times_base, times_ours, ratios = [], [], []
    for _ in range(blocks):
        b, v = timed_block(base), timed_block(variant)
        times_base.append(b)
        times_ours.append(v)
        ratios.append(b / v)
    tokens = batch * bptt
    return (tokens / statistics.median(times_base), tokens / statistics.median(times_ours),
            statistics.median(ratios))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    rows = []
    for setting_name, setting in SETTINGS.items():
        for name, overrides in VARIANTS.items():
            base_tps, ours_tps, ratio = compare(setting, overrides, args.blocks)
            rows.append(f"| {setting_name} | {name} | {base_tps:,.0f} | {ours_tps:,.0f} | "
                        f"{ratio:.2f} |")
            print(rows[-1], flush=True)
    seconds = time.perf_counter() - started
    header = [
        "# LanguageModel head vs a plain nn.LSTM language model: training speed", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, Python {platform.python_version()}, {THREADS} threads, load "
        f"average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at the end.", "",
        f"Command: `python benchmarks/lm_speed.py --blocks {args.blocks}` ({seconds:.0f} s).",
        "", "A training step: forward, cross entropy, backward, SGD update. Method: see the "
        "docstring of benchmarks/lm_speed.py.", "",
        "| setting | harness variant | nn.LSTM LM tok/s | harness tok/s | x nn.LSTM LM |",
        "|---|---|---:|---:|---:|"]
    text = "\n".join(header + rows) + "\n"
    if not args.no_write:
        RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
