"""Moved to :mod:`lstm_harness.reporting.diagnostic_plots`; kept for ``trial.py``'s figures."""

from lstm_harness.reporting.diagnostic_plots import diagnostic_figures

__all__ = ["diagnostic_figures"]
