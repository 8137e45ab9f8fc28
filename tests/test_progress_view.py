"""The live progress view (harness.progress) shows why a trial failed, during the run and in its
final picture, driven through its Tune hooks with fake trials."""

from __future__ import annotations

import io

from rich.console import Console

from lstm_harness.progress import ProgressView, error_reason, failure_reason

TRACEBACK = """Failure # 1 (occurred at 2026-01-01_00-00-00)
ray::ImplicitFunc.train() (pid=1, ip=10.0.0.1, actor_id=x, repr=tune_trainable)
  File "/x/lstm_harness/trial.py", line 150, in execute_trial
    train(model, optimizer, task, cfg.train)
lstm_harness.diagnostics.monitor.NonFiniteError: loss is nan at step 5

"""

# Tune's error file after two failures; the last one's message runs over several lines
TWO_FAILURES = """Failure # 1 (occurred at 2026-01-01_00-00-00)
ray::ImplicitFunc.train() (pid=1, ip=10.0.0.1, actor_id=x, repr=tune_trainable)
  File "/x/lstm_harness/trial.py", line 9, in execute_trial
    raise OSError("disk full")
OSError: disk full
Failure # 2 (occurred at 2026-01-01_00-01-00)
ray::ImplicitFunc.train() (pid=2, ip=10.0.0.1, actor_id=y, repr=tune_trainable)
  File "/x/lstm_harness/trial.py", line 255, in tune_trainable
    raise RuntimeError(f"corrupt checkpoint {path}: {exc}") from exc
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
RuntimeError: corrupt checkpoint /runs/t/checkpoint_000001/trial.pt: Weights only load failed.
Please file an issue with the following: WeightsUnpickler error:

Unsupported operand 103

Check the documentation of torch.load to learn more.
"""


class FakeTrial:
    """What the view reads of a ``ray.tune.experiment.Trial``: the error file Tune wrote in
    the driver's staging folder (``error_file``), else ``get_error`` (the storage copy)."""

    def __init__(self, key: str, error: str | None = None, broken: bool = False,
                 error_file: str | None = None) -> None:
        self.config = {"trial": {"key": key}}
        self.trial_id = f"id_{key}"
        self.error = error
        self.broken = broken
        self.error_file = error_file

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
        "lstm_harness.diagnostics.monitor.NonFiniteError: loss is nan at step 5")
    assert failure_reason(FakeTrial("a", "x" * 500)) == "x" * 300
    assert failure_reason(FakeTrial("a")) == "error (no reason recorded)"
    assert failure_reason(FakeTrial("a", broken=True)) == "error (no reason recorded)"
    assert failure_reason(object()) == "error (no reason recorded)"


def test_reason_of_the_last_failure_first_line(tmp_path) -> None:
    reason = ("RuntimeError: corrupt checkpoint /runs/t/checkpoint_000001/trial.pt: Weights only "
              "load failed.")
    assert error_reason(TWO_FAILURES) == reason
    staged = tmp_path / "error.txt"
    staged.write_text(TWO_FAILURES)
    # the staged file is read first: the storage copy may not exist yet
    assert failure_reason(FakeTrial("a", error_file=str(staged), broken=True)) == reason
    assert failure_reason(FakeTrial("a", "OSError: disk full",
                                    error_file=str(tmp_path / "gone.txt"))) == (
        "OSError: disk full")
    assert error_reason("plain message\n\n") == "plain message"
    assert error_reason("") == "error (no reason recorded)"


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
        "nan|copy|s0": "lstm_harness.diagnostics.monitor.NonFiniteError: loss is nan at step 5"}
    assert progress.counts() == {"done": 1, "running": 1, "failed": 1, "pending": 0}
    progress.on_experiment_end([])
    final = " ".join(out.getvalue().split())  # the table pads its columns
    assert "suite done 1/3 running 1 failed 1 pending 0" in final
    assert "nan|copy|s0 FAILED: lstm_harness.diagnostics.monitor.NonFiniteError: loss is nan at " \
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


def test_long_reason_is_folded_not_cut() -> None:
    """A path in the reason survives a narrow terminal whole (folded over lines, no '…')."""
    out = io.StringIO()
    progress = ProgressView("suite", total=1, console=Console(file=out, width=60))
    path = "/very/long/storage/path/" + "x" * 80 + "/checkpoint_000001/trial.pt"
    progress.on_trial_error(0, [], FakeTrial("k", f"RuntimeError: corrupt checkpoint {path}: bad"))
    progress.setup()
    progress.stop()
    text = out.getvalue()
    assert "…" not in text
    assert f"FAILED:RuntimeError:corruptcheckpoint{path}:bad" in "".join(text.split())
