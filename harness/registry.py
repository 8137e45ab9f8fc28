"""Task discovery through the entry-point group ``lstm_harness.tasks`` (built-ins included)."""

from __future__ import annotations

from importlib.metadata import entry_points

from lstm_harness.tasks.base import TaskBase

GROUP = "lstm_harness.tasks"


class TaskLookupError(LookupError):
    """An unknown task name, or a plugin that fails to import."""


def installed_task_names() -> list[str]:
    """Names of every task registered under the entry-point group, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_task_class(name: str) -> type[TaskBase]:
    """The Task class registered as ``name``; a clear error if unknown or broken."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        installed = ", ".join(installed_task_names()) or "none (is lstm-harness installed?)"
        raise TaskLookupError(f"unknown task '{name}'; installed tasks: {installed}")
    entry = matches[0]
    try:
        cls = entry.load()
    except Exception as exc:  # a plugin's import error, reported with its origin
        raise TaskLookupError(
            f"task plugin '{name}' ({entry.value}) failed to import: "
            f"{type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, TaskBase)):
        raise TaskLookupError(f"task plugin '{name}' ({entry.value}) is not a "
                               "lstm_harness.tasks.base.Task or "
                               "lstm_harness.tasks.base.ForecastTask")
    return cls
