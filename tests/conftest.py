"""Shared fixtures: tiny suites and a scratch working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_SUITE = """
name: {name}
description: tiny end-to-end suite
tasks:
  - {{name: copy, params: {{vocab: 5, min_len: 2, max_len: 4, n_valid: 32, n_test: 32}}}}
base:
  model: {{embed: 8, hidden: 16}}
  train: {{steps: {steps}, batch_size: 16, eval_every: 20, log_every: 10}}
axes:
  opt:
    adam: {{}}
    sgd: {{train.optimizer: sgd, train.lr: 0.1}}
seeds: [0, 1]
metrics: [exact_match, token_accuracy, token_accuracy_tf]
"""


@pytest.fixture
def tiny_suite(tmp_path: Path):
    def write(name: str = "tiny", steps: int = 40) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(TINY_SUITE.format(name=name, steps=steps))
        return path
    return write


@pytest.fixture
def one_thread():
    """Tiny-tensor kernels (layer norm, gradcheck) run far faster on one thread on a busy
    2-core machine; tests of the cells ask for this fixture."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
