"""Where `run`, `table` and `report` write a suite's results."""

from __future__ import annotations

from pathlib import Path

from lstm_harness.cli import results_folder


def test_paper_suites_go_to_results_papers(tmp_path: Path) -> None:
    suite = tmp_path / "ablations" / "papers" / "zoneout.yaml"
    assert results_folder(None, suite, "zoneout") == Path("results/papers/zoneout")


def test_top_level_and_outside_suites_go_to_results(tmp_path: Path) -> None:
    assert results_folder(None, tmp_path / "ablations" / "quick.yaml", "quick") == \
        Path("results/quick")
    assert results_folder(None, tmp_path / "elsewhere" / "s.yaml", "s") == Path("results/s")


def test_explicit_results_dir_wins(tmp_path: Path) -> None:
    suite = tmp_path / "ablations" / "papers" / "zoneout.yaml"
    assert results_folder(Path("out"), suite, "zoneout") == Path("out/zoneout")
