"""Tests of harness.diagnostic_plots on a fake suite's runs in a temporary SQLite MLflow store.

:func:`make_diag_store` is also used by tests/test_report.py.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.reporting import diagnostic_plots as dp
from lstm_harness.reporting.runs import load_trial_runs
from lstm_harness.suite import trial_key

PNG = b"\x89PNG\r\n\x1a\n"
SUITE = "diagsuite"
STEPS = 40  # grad.norm at steps 0..39; monitoring every 10 steps
MONITOR_STEPS = [0, 10, 20, 30, 40]
FAILURE = "NonFiniteError: loss is nan at step 37"

# (row, seed) -> final gate means (encoder layer 0) and the monitor's healthy flags
# (None: the run logged no healthy flag for that gate, the range decides)
FINAL_GATES = {
    ("adam", 0): {"input": 0.40, "forget": 0.50, "output": 0.50, "cell": 0.05},
    ("adam", 1): {"input": 0.42, "forget": 0.52, "output": 0.55, "cell": 0.02},
    ("sgd", 0): {"input": 0.30, "forget": 0.92, "output": 0.60, "cell": 0.10},  # forget saturated
    ("sgd", 1): {"input": 0.35, "forget": 0.60, "output": 0.90, "cell": 0.00},  # output too high
}
NO_HEALTHY_FLAG = {("sgd", 1, "output")}
# sgd seed 0 has a bidirectional encoder: forget-gate means per direction too
DIRECTIONAL = {("sgd", 0): {"fwd": 0.90, "bwd": 0.94}}
# and the monitor's end-of-training flags (one names a gate no metric flags)
MONITOR_TAG = {("sgd", 0): "enc l0 fwd forget mean 0.90 outside [0.25, 0.75] (saturated 0.50); "
                           "dec l1 input mean 0.10 outside [0.2, 0.6]"}
RANGE_PARAMS = {("sgd", 0): {"monitor.forget_range": "(0.25, 0.75)"}}
ANOMALY_STEPS = {("adam", 0): [], ("adam", 1): [25], ("sgd", 0): [5, 17, 33],
                 ("sgd", 1): [3, 8, 21, 29, 36]}
TOP_EIG = {("adam", 0): 2.0, ("adam", 1): 4.0, ("sgd", 0): 10.0, ("sgd", 1): 20.0}
TEST_EM = {("adam", 0): 0.80, ("adam", 1): 0.82, ("sgd", 0): 0.50, ("sgd", 1): 0.52}
MI = {"adam": [1.5, 1.0, 0.5], "sgd": [1.2, 0.6, 0.2]}  # bits at k = 1, 2, 3 (seed 0; +0.1 s1)


def _flush(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start:start + 900])


def _gate_value(final: float, step: int) -> float:
    """A gate mean drifting linearly from 0.5 to its final value."""
    return 0.5 + (final - 0.5) * step / MONITOR_STEPS[-1]


def log_diag_trial(client: MlflowClient, exp: str, opt: str, seed: int, *, end_time: int,
                   suite: str = SUITE, status: str = "FINISHED", failure: str | None = None,
                   params: dict[str, str] | None = None) -> str:
    """One trial of the fake suite with every diagnostic metric; returns its run id."""
    tags = {
        rs.TAG_ROLE: rs.ROLE_TRIAL, rs.TAG_SUITE: suite,
        rs.TAG_TRIAL_KEY: trial_key({"opt": opt}, "copy", seed),
        rs.TAG_TASK: "copy", rs.TAG_SEED: str(seed), rs.TAG_VARIANT_PREFIX + "opt": opt,
    }
    if failure is not None:
        tags[rs.TAG_FAILURE] = failure
    if (opt, seed) in MONITOR_TAG:
        tags[rs.TAG_DIAGNOSTICS] = MONITOR_TAG[(opt, seed)]
    run_id = client.create_run(exp, tags=tags).info.run_id
    if params:
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    now = int(time.time() * 1000)
    metrics: list[Metric] = []

    def log(key: str, value: float, step: int) -> None:
        metrics.append(Metric(key, float(value), now, step))

    finished = status == "FINISHED"
    last = STEPS if finished else 30
    final_gates = FINAL_GATES.get((opt, seed), {"input": 0.4, "forget": 0.5, "output": 0.5,
                                                "cell": 0.0})
    for step in [s for s in MONITOR_STEPS if s <= last]:
        stacks = ["enc", "dec"] if opt == "adam" else ["enc"]
        for stack in stacks:
            for gate, final in final_gates.items():
                mean = _gate_value(final, step)
                log(rs.gate_key(stack, 0, gate, "mean"), mean, step)
                log(rs.gate_key(stack, 0, gate, "var"), 0.01, step)
                log(rs.gate_key(stack, 0, gate, "saturated"), 0.1, step)
                if gate in rs.DEFAULT_RANGES and (opt, seed, gate) not in NO_HEALTHY_FLAG:
                    lo, hi = rs.DEFAULT_RANGES[gate]
                    log(rs.gate_key(stack, 0, gate, "healthy"), float(lo <= mean <= hi), step)
            for direction, final in DIRECTIONAL.get((opt, seed), {}).items():
                mean = _gate_value(final, step)
                log(rs.gate_key(stack, 0, "forget", "mean", direction), mean, step)
                log(rs.gate_key(stack, 0, "forget", "healthy", direction),
                    float(0.3 <= mean <= 0.7), step)
            log(f"cells.{stack}.l0.utilisation", 0.5, step)
            log(f"cells.{stack}.l0.norm", 1.0 + step / 40, step)
        log(rs.LANDSCAPE_PREDICTIVENESS, 0.9, step)
        log(rs.LANDSCAPE_DISTANCE, step / 10, step)
        if step % 20 == 0:
            eig = TOP_EIG.get((opt, seed), 5.0) * (0.5 + step / 80)
            log(rs.LANDSCAPE_TOP_EIG, eig, step)
        if step in (20, 40):
            log("valid.exact_match", TEST_EM.get((opt, seed), 0.1) * step / 40, step)
            log("valid.token_accuracy", 0.5 + step / 100, step)
            for k, bits in enumerate(MI[opt], start=1):
                log(f"{rs.INFO_MI_PREFIX}{k}", (bits + 0.1 * seed) * step / 40, step)
    anomalies = ANOMALY_STEPS.get((opt, seed), [])
    for step in range(min(STEPS, last)):
        if step % 10 and step not in anomalies:
            continue  # as the loop logs: every log_every steps and at every anomaly
        norm = 1.0 + 0.1 * np.sin(step) + (8.0 if step in anomalies else 0.0)
        log(rs.GRAD_NORM, norm, step)
        log(rs.GRAD_NORM_MEAN, 1.0, step)
        log(rs.TRAIN_LOSS, 3.0 - step / 20, step)
        if step in anomalies:
            log(rs.GRAD_ANOMALY, 1.0, step)
    if finished:
        em = TEST_EM[(opt, seed)]
        for key, value in {
            "test.exact_match": em, "test.token_accuracy": em + 0.1,
            "test.token_accuracy_tf": em + 0.15, rs.COST_PARAMS: 1000.0 if opt == "adam" else 900,
            rs.DIAG_FORGET_HEALTHY: float(0.3 <= final_gates["forget"] <= 0.7),
            rs.DIAG_GRAD_ANOMALIES: float(len(anomalies)),
            rs.DIAG_TOP_EIG: TOP_EIG[(opt, seed)],
        }.items():
            log(key, value, 0)
    _flush(client, run_id, metrics)
    client.set_terminated(run_id, status=status, end_time=end_time)
    return run_id


def make_diag_store(root: pathlib.Path, suite: str = SUITE) -> dict[str, object]:
    """``root/mlflow.db`` with the fake suite: rows adam and sgd x seeds 0, 1 finished, and
    sgd seed 2 failed (non-finite loss). Returns uri, run ids by (opt, seed) and the failed id."""
    uri = f"sqlite:///{root.resolve()}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(suite, artifact_location=(root / "artifacts").as_uri())
    launch = client.create_run(exp, tags={rs.TAG_ROLE: rs.ROLE_LAUNCH, rs.TAG_SUITE: suite,
                                          "harness.command": f"lstm-harness run {suite}.yaml"})
    t0 = int(time.time() * 1000)
    client.set_terminated(launch.info.run_id, status="FINISHED", end_time=t0)
    ids: dict[tuple[str, int], str] = {}
    for i, (opt, seed) in enumerate(FINAL_GATES):
        ids[(opt, seed)] = log_diag_trial(client, exp, opt, seed, end_time=t0 + 1000 * (i + 1),
                                          suite=suite, params=RANGE_PARAMS.get((opt, seed)))
    failed = log_diag_trial(client, exp, "sgd", 2, end_time=t0 + 9000, suite=suite,
                            status="FAILED", failure=FAILURE)
    return {"uri": uri, "ids": ids, "failed": failed}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("diagstore")
    out = make_diag_store(root)
    client = MlflowClient(tracking_uri=out["uri"])
    plain = client.create_experiment("plain", artifact_location=(root / "plain").as_uri())
    run = client.create_run(plain, tags={
        rs.TAG_ROLE: rs.ROLE_TRIAL, rs.TAG_SUITE: "plain", rs.TAG_TRIAL_KEY: "k0",
        rs.TAG_TASK: "copy", rs.TAG_SEED: "0", rs.TAG_VARIANT_PREFIX + "opt": "adam"})
    for step in (10, 20):
        client.log_metric(run.info.run_id, "valid.exact_match", step / 20, step=step)
    client.log_metric(run.info.run_id, "test.exact_match", 1.0)
    client.set_terminated(run.info.run_id, status="FINISHED")
    return out


@pytest.fixture(scope="module")
def runs(store):
    finished, _ = load_trial_runs(store["uri"], SUITE)
    row_of = {r["run_id"]: r["variant.opt"] for _, r in finished.iterrows()}
    return finished, row_of


@pytest.fixture
def captured(monkeypatch):
    """Figures passed to plots.save by diagnostic_plots, written but kept open to inspect."""
    import matplotlib.pyplot as plt

    figures = []

    def keep(fig, out_path, dpi=120):
        figures.append(fig)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_path, dpi=dpi)
        return out_path

    monkeypatch.setattr(dp, "save", keep)
    yield figures
    for fig in figures:
        plt.close(fig)


def _is_png(path: pathlib.Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def _band_extent(patch) -> tuple[float, float]:
    vertices = patch.get_patch_transform().transform(patch.get_path().vertices)
    return float(vertices[:, 1].min()), float(vertices[:, 1].max())


def test_every_figure_is_written_as_png(store, runs, tmp_path: pathlib.Path) -> None:
    finished, row_of = runs
    uri = store["uri"]
    paths = [
        dp.gate_curves(uri, finished, row_of, tmp_path / "gates.png"),
        dp.gate_curves(uri, finished, row_of, tmp_path / "gates_all.png", layers="all"),
        dp.grad_norm_curve(uri, finished, row_of, tmp_path / "grad.png"),
        dp.curvature_curve(uri, finished, row_of, tmp_path / "eig.png"),
        dp.mi_curve(finished, row_of, tmp_path / "mi.png"),
    ]
    for path in paths:
        assert path is not None and _is_png(path), path
    made = dp.diagnostic_figures(uri, finished, row_of, tmp_path / "figs")
    assert list(made) == ["gates", "grad_norm", "curvature", "mutual_information"]
    assert all(_is_png(p) and p.parent == tmp_path / "figs" for p in made.values())


def test_every_figure_is_none_without_the_metric(store, tmp_path: pathlib.Path) -> None:
    finished, _ = load_trial_runs(store["uri"], "plain")
    row_of = {r: "adam" for r in finished["run_id"]}
    uri = store["uri"]
    assert dp.gate_curves(uri, finished, row_of, tmp_path / "a.png") is None
    assert dp.grad_norm_curve(uri, finished, row_of, tmp_path / "b.png") is None
    assert dp.curvature_curve(uri, finished, row_of, tmp_path / "c.png") is None
    assert dp.mi_curve(finished, row_of, tmp_path / "d.png") is None
    assert dp.diagnostic_figures(uri, finished, row_of, tmp_path) == {}
    assert not list(tmp_path.iterdir())


def test_gate_panels_shade_the_healthy_range(store, runs, captured, tmp_path) -> None:
    finished, row_of = runs
    dp.gate_curves(store["uri"], finished, row_of, tmp_path / "g.png")
    fig = captured[-1]
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        f"{g} gate · enc layer 0" for g in ("input", "forget", "output", "cell")]
    for ax, gate in zip(axes, ("input", "forget", "output", "cell"), strict=True):
        bands = [p for p in ax.patches if p.get_gid() == dp.BAND_GID]
        if gate == "cell":
            assert bands == []
            continue
        assert len(bands) == 1
        lo, hi = _band_extent(bands[0])
        assert (lo, hi) == pytest.approx(rs.DEFAULT_RANGES[gate])
        # one line per row, the mean over its two seeds
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"adam (n=2)", "sgd (n=2)"}
        y = lines["sgd (n=2)"].get_ydata()
        finals = [FINAL_GATES[("sgd", s)][gate] for s in (0, 1)]
        assert y[-1] == pytest.approx(np.mean(finals))


def test_gate_panels_for_all_layers_and_given_ranges(store, runs, captured, tmp_path) -> None:
    finished, row_of = runs
    dp.gate_curves(store["uri"], finished, row_of, tmp_path / "g.png", layers="all",
                   ranges={"forget": (0.1, 0.9)})
    titles = [ax.get_title() for ax in captured[-1].axes]
    assert len(titles) == 8 and titles[4] == "input gate · dec layer 0"
    forget = captured[-1].axes[1]
    (band,) = [p for p in forget.patches if p.get_gid() == dp.BAND_GID]
    assert _band_extent(band) == pytest.approx((0.1, 0.9))
    assert not [p for p in captured[-1].axes[0].patches if p.get_gid() == dp.BAND_GID]
    with pytest.raises(ValueError):
        dp.gate_curves(store["uri"], finished, row_of, tmp_path / "x.png", layers="some")


def test_grad_norm_marks_every_anomaly_in_red(store, runs, captured, tmp_path) -> None:
    finished, row_of = runs
    dp.grad_norm_curve(store["uri"], finished, row_of, tmp_path / "g.png")
    (ax,) = captured[-1].axes
    dots = [c for c in ax.collections if c.get_label() in ("anomaly", "_nolegend_", "")]
    points = np.concatenate([c.get_offsets() for c in dots])
    expected = sorted(s for steps in ANOMALY_STEPS.values() for s in steps)
    assert sorted(points[:, 0].tolist()) == expected
    assert (points[:, 1] > 8.0).all()  # at the anomalous seed's own norm
    for c in dots:
        assert tuple(c.get_facecolor()[0][:3]) == (1.0, 0.0, 0.0)
    assert {line.get_label() for line in ax.get_lines()} == {"adam (n=2)", "sgd (n=2)"}
    for line in ax.get_lines():  # seeds logged at different steps: the union, in order
        steps = line.get_xdata().tolist()
        assert steps == sorted(steps) and {0, 10, 20, 30}.issubset(steps)
    sgd = {line.get_label(): line for line in ax.get_lines()}["sgd (n=2)"]
    assert len(sgd.get_xdata()) == 4 + 3 + 5


def test_curvature_and_mi_average_over_seeds(store, runs, captured, tmp_path) -> None:
    finished, row_of = runs
    dp.curvature_curve(store["uri"], finished, row_of, tmp_path / "c.png")
    lines = {line.get_label(): line for line in captured[-1].axes[0].get_lines()}
    assert lines["sgd (n=2)"].get_xdata().tolist() == [0, 20, 40]
    assert lines["sgd (n=2)"].get_ydata()[-1] == pytest.approx(15.0)  # mean of 10 and 20

    dp.mi_curve(finished, row_of, tmp_path / "m.png")
    ax = captured[-1].axes[0]
    bars = {container.get_label(): container for container in ax.containers}
    assert set(bars) == {"adam (n=2)", "sgd (n=2)"}
    adam = bars["adam (n=2)"].lines[0]  # the data line of the error bar plot
    assert adam.get_xdata().tolist() == [1, 2, 3]
    assert adam.get_ydata() == pytest.approx([b + 0.05 for b in MI["adam"]])


def test_ranges_from_params(store) -> None:
    client = MlflowClient(tracking_uri=store["uri"])
    assert dp.parse_range("[0.25, 0.75]") == (0.25, 0.75)
    assert dp.parse_range("(1e-1,0.9)") == (0.1, 0.9)
    assert dp.parse_range("0.9, 0.1") is None and dp.parse_range("none") is None
    ranges = dp.ranges_from_params({"monitor.forget_range": "[0.1, 0.9]", "monitor.every": "5",
                                    "monitor.ranges.output": "(0.3, 0.6)", "model.hidden": "8",
                                    "monitor.input_range": "None"})
    assert ranges == {**rs.DEFAULT_RANGES, "forget": (0.1, 0.9), "output": (0.3, 0.6)}
    assert dp.run_ranges(client, store["ids"][("sgd", 0)])["forget"] == (0.25, 0.75)
    assert dp.run_ranges(client, store["ids"][("adam", 0)]) == rs.DEFAULT_RANGES
    assert dp.healthy_ranges(store["uri"], []) == rs.DEFAULT_RANGES
