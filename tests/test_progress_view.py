"""The live progress view (harness.progress) shows why a trial failed, during the run and in its
final picture, driven through its Tune hooks with fake trials."""

from __future__ import annotations

import io

from rich.console import Console

from harness.progress import ProgressView, failure_reason

TRACEBACK = """Failure # 1 (occurred at 2026-01-01_00-00-00)
ray::ImplicitFunc.train() (pid=1, ip=10.0.0.1, actor_id=x, repr=tune_trainable)
  File "/x/harness/trial.py", line 150, in execute_trial
    train(model, optimizer, task, cfg.train)
harness.diagnostics.monitor.NonFiniteError: loss is nan at step 5

"""


class FakeTrial:
    """What the view reads of a ``ray.tune.experiment.Trial``."""

    def __init__(self, key: str, error: str | None = None, broken: bool = False) -> None:
        self.config = {"trial": {"key": key}}
        self.trial_id = f"id_{key}"
        self.error = error
        self.broken = broken

    def get_error(self) -> str | None:
        if self.broken:
            raise OSError("storage is gone")
        return self.error


def view() -> tuple[ProgressView, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False, color_system=None)
    return ProgressView("suite", total=3, console=console), out


def test_failure_reason_is_the_last_line_of_the_error() -> None:
    assert failure_reason(FakeTrial("a", TRACEBACK)) == (
        "harness.diagnostics.monitor.NonFiniteError: loss is nan at step 5")
    assert failure_reason(FakeTrial("a", "x" * 500)) == "x" * 200
    assert failure_reason(FakeTrial("a")) == "error (no reason recorded)"
    assert failure_reason(FakeTrial("a", broken=True)) == "error (no reason recorded)"
    assert failure_reason(object()) == "error (no reason recorded)"


def test_failed_trial_reason_in_live_view_and_final_picture() -> None:
    progress, out = view()
    ok, bad, slow = FakeTrial("ok|copy|s0"), FakeTrial("nan|copy|s0", TRACEBACK), \
        FakeTrial("slow|copy|s0")
    progress.setup()
    for trial in (ok, bad, slow):
        progress.on_trial_start(0, [], trial)
    progress.on_trial_result(0, [], slow, {"step": 20, "valid.exact_match": 0.25})
    progress.on_trial_complete(0, [], ok)
    progress.on_trial_error(0, [], bad)
    assert progress.failed == {
        "nan|copy|s0": "harness.diagnostics.monitor.NonFiniteError: loss is nan at step 5"}
    assert progress.counts() == {"done": 1, "running": 1, "failed": 1, "pending": 0}
    progress.on_experiment_end([])
    final = " ".join(out.getvalue().split())  # the table pads its columns
    assert "suite done 1/3 running 1 failed 1 pending 0" in final
    assert "nan|copy|s0 FAILED: harness.diagnostics.monitor.NonFiniteError: loss is nan at " \
           "step 5" in final
    assert "slow|copy|s0 step 20 valid.exact_match 0.25" in final


def test_retry_shows_the_reason_and_a_later_success_clears_the_failure() -> None:
    progress, out = view()
    trial = FakeTrial("flaky|copy|s1", "RuntimeError: worker died\n")
    progress.on_trial_start(0, [], trial)
    progress.on_trial_recover(0, [], trial)
    assert progress.running["flaky|copy|s1"] == (
        "retrying from its last checkpoint after: RuntimeError: worker died")
    progress.on_trial_error(0, [], trial)
    assert progress.failed == {"flaky|copy|s1": "RuntimeError: worker died"}
    progress.on_trial_complete(0, [], trial)
    assert progress.failed == {} and progress.counts()["done"] == 1
