"""Tests of the diagnostic table columns and of ``lstm-harness report`` (harness.report) on a
fake suite's runs in a temporary SQLite MLflow store (built by tests/test_diagnostic_plots.py).
"""

from __future__ import annotations

import base64
import html.parser
import math
import pathlib

import pandas as pd
import pytest
from test_diagnostic_plots import FAILURE, SUITE, TOP_EIG, make_diag_store

from lstm_harness import run_schema as rs
from lstm_harness.cli import EXIT_BAD_INPUT, EXIT_OK, main
from lstm_harness.reporting.build import build_table
from lstm_harness.reporting.results import layout_for, write_table
from lstm_harness.reporting.runs import load_trial_runs
from lstm_harness.suite import load_suite

PNG = b"\x89PNG\r\n\x1a\n"
SUITE_YAML = """
name: {name}
description: optimisers with <training> diagnostics & more
tasks:
  - {{name: copy, params: {{vocab: 5, min_len: 2, max_len: 4, n_valid: 32, n_test: 32}}}}
base:
  model: {{embed: 8, hidden: 16}}
  train: {{steps: 40, batch_size: 16, eval_every: 20, log_every: 10}}
axes:
  opt:
    adam: {{}}
    sgd: {{train.optimizer: sgd, train.lr: 0.1}}
seeds: [0, 1, 2]
metrics: [exact_match, token_accuracy]
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("runs")
    out = make_diag_store(root)
    suite_path = root.parent / f"{SUITE}.yaml"
    suite_path.write_text(SUITE_YAML.format(name=SUITE))
    out.update(root=root, suite_path=suite_path)
    return out


@pytest.fixture(scope="module")
def table(store):
    suite = load_suite(store["suite_path"])
    finished, failed = load_trial_runs(store["uri"], SUITE)
    return build_table(finished, layout_for(suite), failed, caption="diag")


# --------------------------------------------------------------------------------------------
# table columns


def test_diagnostic_columns_k_over_n_and_means(table) -> None:
    assert table.diag_keys == [rs.DIAG_FORGET_HEALTHY, rs.DIAG_GRAD_ANOMALIES, rs.DIAG_TOP_EIG]
    assert table.diag_values("adam", rs.DIAG_FORGET_HEALTHY) == [1.0, 1.0]
    assert sorted(table.diag_values("sgd", rs.DIAG_FORGET_HEALTHY)) == [0.0, 1.0]
    assert table.diag_mean("sgd", rs.DIAG_FORGET_HEALTHY) == 0.5
    assert table.diag_mean("adam", rs.DIAG_GRAD_ANOMALIES) == 0.5  # 0 and 1
    assert table.diag_mean("sgd", rs.DIAG_GRAD_ANOMALIES) == 4.0  # 3 and 5
    assert table.diag_mean("sgd", rs.DIAG_TOP_EIG) == pytest.approx(15.0)

    md = table.to_markdown()
    header = md.splitlines()[2]
    assert header.endswith("| params | forget healthy | grad anomalies | top eig. |")
    rows = {line.split(" | ")[0].strip("| ").removesuffix(" (baseline)"): line
            for line in md.splitlines() if line.startswith(("| adam", "| sgd"))}
    assert rows["adam"].endswith("| 1,000 | 2/2 | 0.5 | 3 |")
    assert rows["sgd"].endswith("| 900 | 1/2 | 4.0 | 15 |")
    assert "- Diagnostic columns: forget healthy: k/n" in md
    assert "grad anomalies: mean number" in md and "top eig.: mean" in md


def test_diagnostic_columns_in_latex_csv_and_html(table, tmp_path: pathlib.Path) -> None:
    tex = table.to_latex()
    assert "\\multicolumn{3}{c}{diagnostics}" in tex
    assert "\\cmidrule(lr){5-7}" in tex  # label, 2 metric columns, 1 cost, 3 diagnostics
    assert "forget healthy & grad anomalies & top eig." in tex
    assert "1/2 & 4.0 & 15 \\\\" in tex
    assert tex.count("{lccrrrr}") == 1

    write_table(table, tmp_path)
    csv = pd.read_csv(tmp_path / "table.csv")
    assert list(csv.columns[-4:]) == [rs.DIAG_FORGET_HEALTHY, rs.DIAG_FORGET_HEALTHY + ".n",
                                      rs.DIAG_GRAD_ANOMALIES, rs.DIAG_TOP_EIG]
    sgd = csv[csv["row"] == "sgd"].iloc[0]
    assert sgd[rs.DIAG_FORGET_HEALTHY] == 0.5 and sgd[rs.DIAG_FORGET_HEALTHY + ".n"] == 2
    assert sgd[rs.DIAG_TOP_EIG] == pytest.approx(15.0)

    page = table.to_html()
    assert "<th>forget healthy</th><th>grad anomalies</th><th>top eig.</th>" in page
    assert "<td>1/2</td><td>4.0</td><td>15</td></tr>" in page


def test_no_diagnostic_columns_without_diag_metrics(table) -> None:
    layout = table.layout
    runs = pd.DataFrame({"run_id": ["a"], "trial_key": ["a"], "task": ["copy"], "seed": [0],
                         "variant.opt": ["adam"], "metrics.test.exact_match": [0.5]})
    plain = build_table(runs, layout)
    assert plain.diag_keys == [] and "forget healthy" not in plain.to_markdown()
    assert "diagnostics" not in plain.to_latex() and "Diagnostic" not in plain.to_html()
    assert math.isnan(plain.diag_mean("adam", rs.DIAG_TOP_EIG))


def test_html_table_escapes_text(table) -> None:
    runs = pd.DataFrame({"run_id": ["a"], "trial_key": ["a"], "task": ["copy"], "seed": [0],
                         "variant.opt": ["adam"], "metrics.test.exact_match": [0.5]})
    failed = pd.DataFrame({"run_id": ["b"], "trial_key": ["<k&>"], "task": ["copy"],
                           "seed": [1], "variant.opt": ["sgd"], "failure": ["x < y & <b>"]})
    page = build_table(runs, table.layout, failed, caption="a <caption> & more").to_html()
    assert "<caption>a &lt;caption&gt; &amp; more</caption>" in page
    assert "<code>&lt;k&amp;&gt;</code>" in page and "x &lt; y &amp; &lt;b&gt;" in page
    assert "<b>" not in page
    _check_balanced(page)


# --------------------------------------------------------------------------------------------
# the report


class _Page(html.parser.HTMLParser):
    """Balanced-tag check (void elements excepted), images and visible text of a page."""

    VOID = {"img", "meta", "br", "hr", "link", "input", "source", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.counts: dict[str, int] = {}
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        attributes = dict(attrs)
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag == "img":
            self.images.append(attributes)
        if tag in ("link", "script", "iframe"):
            self.external.append(tag)
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data) -> None:
        if not self.stack or self.stack[-1] not in ("style", "title"):
            self.text.append(data)


def _check_balanced(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> dict[str, object]:
    results = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        code = main(["report", str(store["suite_path"]), "--runs-dir", str(store["root"]),
                     "--results-dir", str(results)])
    path = results / SUITE / "report.html"
    return {"code": code, "path": path, "results": results}


def test_report_is_one_well_formed_self_contained_page(report) -> None:
    assert report["code"] == EXIT_OK
    assert sorted(p.name for p in report["path"].parent.iterdir()) == ["report.html"]
    page = report["path"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    parser = _check_balanced(page)
    assert parser.external == []  # no scripts, style sheets or images from elsewhere
    for tag in ("table", "tr", "td", "section", "figure", "style"):
        assert parser.counts.get(tag, 0) > 0, tag
    assert parser.counts["section"] >= 5 + 2  # table, curves, diagnostics, variants, provenance


def test_report_embeds_every_figure_as_png(report) -> None:
    parser = _check_balanced(report["path"].read_text(encoding="utf-8"))
    # 2 learning curves (valid.exact_match, valid.token_accuracy) + 4 diagnostic figures
    assert len(parser.images) == 6
    alts = [img["alt"] for img in parser.images]
    assert alts[:2] == ["learning curve exact_match", "learning curve token_accuracy"]
    assert alts[2:] == ["gates", "grad norm", "curvature", "mutual information"]
    for img in parser.images:
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert data[:8] == PNG and len(data) > 1000


def test_report_table_flags_failures_and_provenance(report, store) -> None:
    page = report["path"].read_text(encoding="utf-8")
    parser = _check_balanced(page)
    text = " ".join(" ".join(parser.text).split())
    # title, escaped description and summary
    assert f"{SUITE}: ablation report" in text
    assert "optimisers with <training> diagnostics & more" in text
    assert "&lt;training&gt; diagnostics &amp; more" in page
    assert "4 of 6 trials finished, 1 failed" in text
    # the table: row labels, numbers, diagnostic columns
    assert '<table class="ablation">' in page
    assert '<tr class="baseline"><td>adam (baseline)</td><td><strong>0.810 ± 0.014</strong></td>' \
        in page
    assert "<td>sgd</td><td>0.510 ± 0.014† (1 failed)</td>" in page
    assert "<td>2/2</td><td>0.5</td><td>3</td>" in page
    assert "<td>1/2</td><td>4.0</td><td>15</td>" in page
    # the failed trial's reason, in the table notes and in the sgd section
    assert text.count(FAILURE) == 2
    # unhealthy gate flags: by the logged healthy flag (per direction for a bidirectional layer,
    # with the run's own range), without one by the range, and the monitor's end-of-training tag
    flags = [
        "unhealthy forget gate (enc layer 0 fwd) in copy, seed 0: final mean 0.900 outside its "
        "healthy range [0.25, 0.75]",  # this run set monitor.forget_range
        "unhealthy forget gate (enc layer 0 bwd) in copy, seed 0: final mean 0.940 outside its "
        "healthy range [0.25, 0.75]",
        "unhealthy input gate (dec layer 1) in copy, seed 0 at the end (monitor): dec l1 input "
        "mean 0.10 outside [0.2, 0.6]",
        "unhealthy output gate (enc layer 0) in copy, seed 1: final mean 0.900 outside its "
        "healthy range [0.2, 0.8]",
    ]
    for flag in flags:
        assert f"⚠ {flag}" in text, flag
    assert text.count("⚠ unhealthy ") == len(flags)  # no other gate flagged
    assert "all monitored gate means ended inside their healthy ranges (2 trials)" in text
    assert "forget gates healthy at the end: 1/2 trials" in text
    assert "gradient-norm anomalies: mean 4.0 (seed 0: 3; seed 1: 5)" in text
    eig = TOP_EIG[("sgd", 0)], TOP_EIG[("sgd", 1)]
    assert f"top Hessian eigenvalue at the end: mean 15 (seed 0: {eig[0]:g}; seed 1: " \
        f"{eig[1]:g})" in text
    # sgd's final gate means, seeds with an unhealthy gate counted
    assert "<tr><td>enc layer 0</td><td>0.325</td><td>0.760</td><td class=" in page
    assert '>0.750 ⚠ 1/2</td><td>0.050</td></tr>' in page
    assert "<tr><td>enc layer 0 fwd</td><td>—</td><td class=" in page
    assert '>0.900 ⚠ 1/1</td><td>—</td><td>—</td></tr>' in page
    assert "4 of 6 trials finished, 1 failed (2 rows × 1 task × 3 seeds)" in text
    # provenance
    for label in ("command", "git commit", "machine", "MLflow store", "trials launched by"):
        assert f"<dt>{label}</dt>" in page
    assert f"lstm-harness report {store['suite_path']}" in text
    assert f"lstm-harness run {SUITE}.yaml" in text
    assert "package versions" in text and "mlflow " in text


def test_row_with_failed_trials_only(table) -> None:
    from lstm_harness.reporting.report import RowDiagnostics, _variant_section

    section = _variant_section(3, RowDiagnostics("sgd"), table, several_tasks=False)
    assert "finished trials: 0" in section and "no finished trial" in section
    assert FAILURE in section and "monitor</code> options off" not in section
    _check_balanced(section)


def test_report_bad_input_exits_2(store, tmp_path: pathlib.Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    missing = tmp_path / "nope.yaml"
    assert main(["report", str(missing), "--runs-dir", str(store["root"]),
                 "--results-dir", str(results)]) == EXIT_BAD_INPUT
    assert "suite file not found" in capsys.readouterr().err

    other = tmp_path / "other.yaml"
    other.write_text(SUITE_YAML.format(name="other"))
    assert main(["report", str(other), "--runs-dir", str(store["root"]),
                 "--results-dir", str(results)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "no trial runs of suite 'other'" in err and err.count("error:") == 1

    assert main(["report", str(other), "--runs-dir", str(tmp_path / "empty"),
                 "--results-dir", str(results)]) == EXIT_BAD_INPUT
    assert "no MLflow database at" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists() and not results.exists()
