"""Local data files of a suite's tasks, read once in the driver before anything is launched.

A task with ``source: files`` reads its files in every trial; a missing or malformed file would
fail every trial (after its retries) with the same message. ``validate`` and ``run`` read them
first and refuse the suite with that message instead. Only local files are read here: built-in
corpora and hub datasets are left to the trials (the hub may be slow or offline).
"""

from __future__ import annotations

from lstm_harness.suite import Suite, task_label
from lstm_harness.tasks.data import DataError, read_pair_files


def data_file_errors(suite: Suite) -> list[str]:
    """One line per task whose local data files cannot be read: ``tasks[i].params.files:``
    then the file, the line or row where that applies, and what is wrong."""
    lines: list[str] = []
    for i, spec in enumerate(suite.spec.tasks):
        cls = suite.task_classes[task_label(spec)]
        params = cls.Params.model_validate(spec.params)
        if getattr(params, "source", None) != "files" or getattr(params, "files", None) is None:
            continue
        where = f"tasks[{i}].params.files"
        try:
            if hasattr(params, "columns"):  # text pairs (translation, summarization)
                read_pair_files(params.files, params.columns, params.format)
            else:
                cls(params).check_data()
        except DataError as exc:
            lines.append(f"{where}: {exc}")
    return lines
