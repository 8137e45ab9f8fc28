"""`lstm-harness tasks` lists every task family with its kind, metrics and parameters."""

from __future__ import annotations

import pytest

from lstm_harness.cli import main

EXPECTED = {  # task -> (kind, a metric, parameters it must show)
    "language_model": ("lm", "perplexity", ["level", "bptt", "vocab_size", "source", "files"]),
    "copy_memory": ("lm", "cross_entropy", ["delay", "symbols", "success_accuracy"]),
    "pixel_sequence": ("classify", "error", ["size", "permute", "permutation_seed"]),
    "adding": ("classify", "mse", ["length", "min_length", "success_mse"]),
    "temporal_order": ("classify", "success", ["length", "min_length", "success_error"]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tasks_command_lists_the_task_with_its_parameters(capsys, name: str) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    kind, metric, params = EXPECTED[name]
    header = next(line for line in out.splitlines() if line.startswith(f"{name} ("))
    assert header.startswith(f"{name} ({kind}): metrics ") and metric in header
    after = out.split(header + "\n", 1)[1].splitlines()
    lines = []
    for line in after:  # this task's parameter lines: indented, up to the next task
        if not line.startswith("    "):
            break
        lines.append(line.strip())
    for param in params:
        assert any(line.startswith(f"{param}:") for line in lines), (name, param)
