"""Bad input through the command line: each gets one clear message and exit code 2, and nothing
is launched. One test per row of docs/bad-inputs.md that tests/test_suite_validation.py does not
already cover (the doc names the test of every row).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from lstm_harness import cli
from lstm_harness import run_schema as rs
from lstm_harness.cli import EXIT_BAD_INPUT, main

ANSI = re.compile(r"\x1b\[[0-9;]*m")

SUITE: dict[str, Any] = {
    "name": "bad",
    "tasks": [{"name": "copy", "params": {"vocab": 5, "min_len": 2, "max_len": 4}}],
    "base": {"model": {"embed": 8, "hidden": 8}, "train": {"steps": 4}},
    "seeds": [0],
    "metrics": ["exact_match"],
}


@pytest.fixture(autouse=True)
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty cwd, no tracking URI from the environment, a private data cache; afterwards,
    check that nothing was launched (no runs/ or results/ folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("LSTM_HARNESS_CACHE", str(tmp_path / "cache"))
    yield
    assert not (tmp_path / "runs").exists(), "bad input must not create runs/"
    assert not (tmp_path / "results").exists(), "bad input must not create results/"


def write_suite(tmp_path: Path, content: dict[str, Any] | str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else
                    yaml.safe_dump(content, sort_keys=False))
    return path


def with_task(task: dict[str, Any], metrics: list[str]) -> dict[str, Any]:
    return {**SUITE, "tasks": [task], "metrics": metrics}


def cli_error(argv: list[str], capsys) -> str:
    """Run the CLI: it must exit 2 with exactly one error message (possibly over several
    lines, each starting with ``error:``); returns that message without the prefixes."""
    code = main(argv)
    err = ANSI.sub("", capsys.readouterr().err)
    assert code == EXIT_BAD_INPUT, err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    return "\n".join(line.removeprefix("error: ") for line in lines)


def suite_error(tmp_path: Path, capsys, content: dict[str, Any] | str,
                command: str = "validate") -> str:
    """``lstm-harness <command> SUITE`` on a bad suite: the message after ``<file>: ``."""
    path = write_suite(tmp_path, content)
    message = cli_error([command, str(path)], capsys)
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to start Ray or the MLflow UI fail the test."""
    import lstm_harness.runner

    def refuse(*args, **kwargs):
        raise AssertionError("launched despite bad input")

    monkeypatch.setattr(lstm_harness.runner, "run_suite", refuse)
    monkeypatch.setattr(subprocess, "call", refuse)


# ------------------------------------------------------------------ values in the suite


def test_negative_steps(tmp_path, capsys):
    suite = {**SUITE, "base": {"train": {"steps": -3}}}
    assert suite_error(tmp_path, capsys, suite) == (
        "base.train.steps: Input should be greater than or equal to 1 (got -3)")


def test_negative_dropout_rate(tmp_path, capsys):
    suite = {**SUITE, "base": {"model": {"dropout": {"input": -0.5}}}}
    assert suite_error(tmp_path, capsys, suite) == (
        "base.model.dropout.input: Input should be greater than or equal to 0 (got -0.5)")


def test_typo_in_a_train_option(tmp_path, capsys):
    message = suite_error(tmp_path, capsys, {**SUITE, "base": {"train": {"clipp": {}}}})
    assert message.startswith("base.train.clipp: unknown key 'clipp'; allowed: "), message
    assert {"clip", "loss", "sampling", "curriculum", "lr_schedule"} <= set(
        message.split("allowed: ")[1].split(", "))


def test_unknown_technique_name(tmp_path, capsys):
    suite = {**SUITE, "base": {"train": {"clip": {"kind": "nrom"}}}}
    assert suite_error(tmp_path, capsys, suite) == (
        "base.train.clip.kind: Input should be 'none', 'norm', 'adaptive' or 'per_gate' "
        "(got 'nrom')")


def test_key_given_twice_at_top_level(tmp_path, capsys):
    text = ("name: twice\ntasks: [{name: copy}]\nseeds: [0]\nseeds: [1, 2]\n"
            "metrics: [exact_match]\n")
    assert suite_error(tmp_path, capsys, text) == (
        "line 4, column 1: invalid YAML: duplicate key 'seeds'")


def test_run_refuses_a_bad_suite_before_launching(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    suite = {**SUITE, "seeds": "zero"}
    assert suite_error(tmp_path, capsys, suite, command="run") == (
        "seeds: Input should be a valid list (got 'zero')")


# ------------------------------------------------------------------ data files


def text_task(files: Any) -> dict[str, Any]:
    return {"name": "translation", "params": {"source": "files", "files": files,
                                              "columns": ["src", "tgt"]}}


def write_pairs(path: Path, n: int = 30) -> Path:
    path.write_text("".join(json.dumps({"src": f"a b {i}", "tgt": f"x {i}"}) + "\n"
                            for i in range(n)))
    return path


def test_missing_data_file(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    missing = tmp_path / "data" / "train.jsonl"
    suite = with_task(text_task(str(missing)), ["bleu"])
    for command in ("validate", "run"):
        assert suite_error(tmp_path, capsys, suite, command) == (
            f"tasks[0].params.files: {missing}: file not found")


def test_malformed_data_file_line(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    bad = write_pairs(tmp_path / "bad.jsonl")
    bad.write_text(bad.read_text() + '{"src": "a", "tgt": \n')
    suite = with_task(text_task({"train": str(bad)}), ["bleu"])
    for command in ("validate", "run"):
        message = suite_error(tmp_path, capsys, suite, command)
        assert message.startswith(f"tasks[0].params.files: {bad} line 31: not valid JSON ("), \
            message


def test_relative_data_path_is_relative_to_the_suite_file(tmp_path, capsys, monkeypatch):
    """Trials run in their own working directory: a relative path is resolved against the
    suite file's folder, not the shell's working directory."""
    no_launch(monkeypatch)
    (tmp_path / "data").mkdir()
    write_pairs(tmp_path / "data" / "pairs.jsonl")
    monkeypatch.chdir(tmp_path / "data")  # where a path relative to the shell would look
    suite = with_task(text_task("data/pairs.jsonl"), ["bleu"])
    assert main(["validate", str(write_suite(tmp_path, suite))]) == cli.EXIT_OK
    capsys.readouterr()
    suite = with_task(text_task({"train": "pairs.jsonl"}), ["bleu"])
    assert suite_error(tmp_path, capsys, suite) == (
        f"tasks[0].params.files: {tmp_path / 'pairs.jsonl'}: file not found")


def test_good_data_file_is_valid(tmp_path, capsys):
    suite = with_task(text_task(str(write_pairs(tmp_path / "pairs.jsonl"))), ["bleu"])
    assert main(["validate", str(write_suite(tmp_path, suite))]) == cli.EXIT_OK
    assert "valid — 1 trials" in capsys.readouterr().err


# ------------------------------------------------------------------ run: cluster and store


def test_unreachable_cluster_fails_fast(tmp_path, capsys, monkeypatch):
    """``ray.init`` retries for minutes on an address where nothing listens; the TCP check
    answers before anything launches (``no_launch``: run_suite, hence ray.init, is never
    reached), and nothing is created."""
    no_launch(monkeypatch)
    path = write_suite(tmp_path, SUITE)
    message = cli_error(["run", str(path), "--address", "127.0.0.1:1"], capsys)
    assert message.startswith("cannot reach the Ray cluster at --address '127.0.0.1:1': "
                              "nothing accepts connections at "), message
    assert ":1 (connection refused). Start its head with `ray start --head`" in message


@pytest.mark.parametrize(("argv", "env", "shown", "target"), [
    (["--address", "ray://127.0.0.1:1"], None, "--address 'ray://127.0.0.1:1'", "127.0.0.1:1"),
    # auto: $RAY_ADDRESS first, as Ray looks it up (a cluster's address file comes second)
    (["--address", "auto"], "127.0.0.1:1", "--address 'auto'", ":1"),
    # no --address: ray.init would join $RAY_ADDRESS
    ([], "127.0.0.1:1", "$RAY_ADDRESS '127.0.0.1:1'", ":1"),
])
def test_other_unreachable_cluster_addresses(argv, env, shown, target, tmp_path, capsys,
                                             monkeypatch):
    no_launch(monkeypatch)
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    path = write_suite(tmp_path, SUITE)
    message = cli_error(["run", str(path), *argv], capsys)
    assert message.startswith(f"cannot reach the Ray cluster at {shown}: nothing accepts "
                              "connections at "), message
    assert f"{target} (connection refused)" in message


def test_malformed_cluster_address(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    path = write_suite(tmp_path, SUITE)
    message = cli_error(["run", str(path), "--address", "headnode"], capsys)
    assert message.startswith("cannot reach the Ray cluster at --address 'headnode': "
                              "'headnode': expected host:port"), message


def test_store_under_a_file(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    path = write_suite(tmp_path, SUITE)
    blocker = tmp_path / "notadir"
    blocker.write_text("")
    db = blocker / "sub" / "mlflow.db"
    assert cli_error(["run", str(path), "--tracking-uri", f"sqlite:///{db}"], capsys) == (
        f"cannot write the MLflow database {db}: {blocker} is a file, not a folder (pass "
        "--runs-dir or --tracking-uri with a writable place)")
    assert cli_error(["run", str(path), "--runs-dir", str(blocker / "runs")], capsys) == (
        f"cannot write the MLflow database {blocker / 'runs' / 'mlflow.db'}: {blocker} is a "
        "file, not a folder (pass --runs-dir or --tracking-uri with a writable place)")


def test_read_only_runs_dir(tmp_path, capsys, monkeypatch):
    """A read-only folder (simulated through os.access, so that the test holds as root too)."""
    no_launch(monkeypatch)
    path = write_suite(tmp_path, SUITE)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(target, mode, **kwargs) -> bool:
        if Path(target) == locked and mode & os.W_OK:
            return False
        return real_access(target, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    db = locked / "runs" / "mlflow.db"
    assert cli_error(["run", str(path), "--runs-dir", str(locked / "runs")], capsys) == (
        f"cannot write the MLflow database {db}: the folder {locked} is read-only (pass "
        "--runs-dir or --tracking-uri with a writable place)")
    elsewhere = tmp_path / "elsewhere" / "mlflow.db"
    message = cli_error(["run", str(path), "--runs-dir", str(locked),
                         "--tracking-uri", f"sqlite:///{elsewhere}"], capsys)
    assert message == (f"--runs-dir {locked} (Ray's trial storage) cannot be written: the "
                       f"folder {locked} is read-only")
    assert not elsewhere.parent.exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="file modes do not bind root")
def test_read_only_folder_by_mode(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    path = write_suite(tmp_path, SUITE)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    db = locked / "mlflow.db"
    assert cli_error(["run", str(path), "--tracking-uri", f"sqlite:///{db}"], capsys) == (
        f"cannot write the MLflow database {db}: the folder {locked} is read-only (pass "
        "--runs-dir or --tracking-uri with a writable place)")


def test_relative_sqlite_uri(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    path = write_suite(tmp_path, SUITE)
    message = cli_error(["run", str(path), "--tracking-uri", "sqlite:///mlflow.db"], capsys)
    assert message.startswith("MLflow store sqlite:///mlflow.db: give an absolute path "
                              "(sqlite:////absolute/path/mlflow.db, four slashes)"), message


def test_unreachable_tracking_server(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    path = write_suite(tmp_path, SUITE)
    assert cli_error(["run", str(path), "--tracking-uri", "http://127.0.0.1:1"], capsys) == (
        "no MLflow tracking server at http://127.0.0.1:1: nothing accepts connections at "
        "127.0.0.1:1 (connection refused)")


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "s.yaml", "--max-concurrent", "0"],
     "argument --max-concurrent: 0 is out of range (allowed: 1 or more)"),
    (["run", "s.yaml", "--max-failures", "-1"],
     "argument --max-failures: -1 is out of range (allowed: 0 or more)"),
    (["ui", "--port", "70000"], "argument --port: 70000 is out of range (allowed: from 1 to "
     "65535)"),
    (["ui", "--port", "http"], "argument --port: 'http' is not an integer"),
])
def test_bad_numbers_on_the_command_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(expected)


# ------------------------------------------------------------------ the MLflow UI


def test_ui_port_in_use(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    store = tmp_path / "store"
    store.mkdir()
    (store / "mlflow.db").write_bytes(b"")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli_error(["ui", "--port", str(port), "--runs-dir", str(store)], capsys) == (
            f"cannot start the MLflow UI: port {port} on 127.0.0.1 is already in use; pick "
            "another port with --port (or another --host)")


def test_ui_without_a_database(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    db = tmp_path / "elsewhere" / "mlflow.db"
    assert cli_error(["ui", "--runs-dir", str(db.parent)], capsys) == (
        f"no MLflow database at {db} (run a suite first, or pass --runs-dir / --tracking-uri)")


def test_ui_store_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    no_launch(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("")
    db = blocker / "mlflow.db"
    assert cli_error(["ui", "--tracking-uri", f"sqlite:///{db}"], capsys) == (
        f"cannot write the MLflow database {db}: {blocker} is a file, not a folder (pass "
        "--runs-dir or --tracking-uri with a writable place)")


# ------------------------------------------------------------------ a corrupt checkpoint

# a trial's dict as Tune holds it (the checkpoint fails before the trial is built)
CORRUPT_TRIAL = {"key": "baseline|copy|s0", "suite": "corrupt", "variants": {},
                 "task": {"name": "copy", "label": "copy", "params": {}}, "seed": 0,
                 "config": {}, "init_from": None}


def test_corrupt_checkpoint_names_its_path(tmp_path, monkeypatch):
    """The trainable's resume path: a checkpoint file that torch cannot read is an error that
    names the file (Tune reports it as the trial's failure)."""
    from ray import tune

    from lstm_harness.trial import CHECKPOINT_FILE, Runtime, tune_trainable

    folder = tmp_path / "checkpoint_000003"
    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(b"not a torch file")
    monkeypatch.setattr(tune, "get_checkpoint",
                        lambda: tune.Checkpoint.from_directory(str(folder)))
    with pytest.raises(RuntimeError) as err:
        tune_trainable({"trial": CORRUPT_TRIAL}, Runtime(None, None, None))
    assert str(err.value).startswith(f"corrupt checkpoint {folder / CHECKPOINT_FILE}: ")


def test_checkpoint_with_pickled_code_is_refused(tmp_path, monkeypatch):
    """weights_only=True: a checkpoint that would run code when unpickled is refused too."""
    from ray import tune

    from lstm_harness.trial import CHECKPOINT_FILE, Runtime, tune_trainable

    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    torch.save({"model": os.system}, folder / CHECKPOINT_FILE)
    monkeypatch.setattr(tune, "get_checkpoint",
                        lambda: tune.Checkpoint.from_directory(str(folder)))
    with pytest.raises(RuntimeError, match=re.escape(f"corrupt checkpoint {folder}")):
        tune_trainable({"trial": CORRUPT_TRIAL}, Runtime(None, None, None))


CORRUPT_SUITE = """
name: corrupt
tasks:
  - {name: copy, params: {vocab: 5, min_len: 2, max_len: 4, n_valid: 16, n_test: 16}}
base:
  model: {embed: 8, hidden: 8}
  train: {steps: 1000000, batch_size: 8, eval_every: 50, log_every: 50}
seeds: [0]
metrics: [exact_match]
"""


def checkpoint_in_state(experiment: Path) -> str | None:
    """The checkpoint folder name Tune's saved experiment state resumes the trial from."""
    for state in experiment.glob("experiment_state-*.json"):
        try:
            data = json.loads(state.read_text())
            result = json.loads(data["trial_data"][0][1])["last_result"]
        except (OSError, ValueError, KeyError, IndexError):
            continue  # being written
        if result.get("checkpoint_dir_name"):
            return result["checkpoint_dir_name"]
    return None


@pytest.mark.slow
def test_corrupt_checkpoint_fails_the_trial_with_its_path(tmp_path):
    """The driver is killed after a checkpoint; the checkpoint the saved state resumes from is
    overwritten with garbage; the same command again fails that trial (exit 1) with a reason
    that names the file, in the live view and in the final FAILED lines."""
    import signal
    import sys

    work = tmp_path / "work"  # this test launches: keep runs/ out of the checked cwd
    work.mkdir()
    suite = work / "corrupt.yaml"
    suite.write_text(CORRUPT_SUITE)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [sys.executable, "-m", "lstm_harness", "run", str(suite), "--max-failures", "0"]
    driver = subprocess.Popen([*argv, "--no-progress"], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 240
    name = None
    while time.monotonic() < deadline and driver.poll() is None and name is None:
        time.sleep(0.5)
        experiments = list((work / "runs" / "ray").glob("corrupt-*"))
        name = checkpoint_in_state(experiments[0]) if experiments else None
    assert driver.poll() is None, "the driver ended before it could be interrupted"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
    driver.wait()
    assert name is not None, "no checkpoint was saved in 240 s"
    (trial_dir,) = [p for p in experiments[0].iterdir() if p.is_dir()]
    folder = trial_dir / name  # may already be gone: Tune keeps only the newest checkpoint
    folder.mkdir(exist_ok=True)
    checkpoint = folder / "trial.pt"
    checkpoint.write_bytes(b"garbage, not a torch checkpoint")

    rerun = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                           timeout=300)
    out = ANSI.sub("", rerun.stdout + rerun.stderr)
    assert rerun.returncode == 1, out
    assert "resuming the interrupted launch in" in out
    # the live view's final picture (its table may wrap a long path: compare without spaces)
    line = f"baseline|copy|s0 FAILED: RuntimeError: corrupt checkpoint {checkpoint}: "
    assert "".join(line.split()) in "".join(out.split()), out
    final = [line for line in out.splitlines() if line.startswith("FAILED baseline|copy|s0: ")]
    assert final and f"corrupt checkpoint {checkpoint}: " in " ".join(final), out
    assert "corrupt: 0/1 trials finished, 1 failed" in out
    # the run the killed attempt left RUNNING ends FAILED with the reason: table and report
    client = MlflowClient(f"sqlite:///{work / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("corrupt")
    (run,) = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL]
    assert run.info.status == "FAILED"
    assert run.data.tags[rs.TAG_FAILURE].startswith(f"corrupt checkpoint {checkpoint}: ")
    table = (work / "results" / "corrupt" / "table.md").read_text()
    assert "| baseline | — (1 failed) |" in table  # the marked cell, and the reason below
    assert f"  - `baseline|copy|s0` (baseline, copy, seed 0): corrupt checkpoint {checkpoint}: " \
        in table


# ------------------------------------------------------------------ the outcome of a run


@pytest.mark.parametrize(("finished", "failed", "code", "summary"), [
    (2, {}, 0, "s: 2/2 trials finished; table: "),
    (1, {"b|copy|s0": "NonFiniteError: loss is [nan] at step 5"}, 1,
     "s: 1/2 trials finished, 1 failed; table: "),
    # Tune lost a trial without an error of its own (its actor died before it ran)
    (1, {}, 1, "s: 1/2 trials finished, 1 did not finish (no reason recorded: see Ray's "
               "messages above); table: "),
])
def test_run_exit_code_and_summary(finished, failed, code, summary, tmp_path, capsys,
                                   monkeypatch):
    import lstm_harness.reporting.results
    import lstm_harness.runner
    from lstm_harness.runner import RunOutcome

    path = write_suite(tmp_path, {**SUITE, "name": "s"})
    outcome = RunOutcome(total=2, skipped=0, finished=finished, failed=failed)
    monkeypatch.setattr(lstm_harness.runner, "run_suite", lambda suite, opts: outcome)
    monkeypatch.setattr(lstm_harness.reporting.results, "write_results", lambda *args, **kwargs: [])
    assert main(["run", str(path)]) == code
    err = ANSI.sub("", capsys.readouterr().err)
    assert summary in err, err
    if failed:  # the reason verbatim: "[nan]" is not read as rich markup
        assert "FAILED b|copy|s0: NonFiniteError: loss is [nan] at step 5" in err
