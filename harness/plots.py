"""Moved to :mod:`lstm_harness.reporting.plots`; kept for ``trial.py``'s attention figure."""

from lstm_harness.reporting.plots import attention_heatmap

__all__ = ["attention_heatmap"]
