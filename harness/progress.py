"""Live terminal view of a suite: trials done / running / failed, elapsed time, latest metrics."""

from __future__ import annotations

import time
from pathlib import Path

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lstm_harness import run_schema as rs

REASON_CHARS = 300


NO_REASON = "error (no reason recorded)"


def error_reason(text: str) -> str:
    """The first line of the final exception in an error text: a Python or Ray traceback, or
    Tune's error file (one ``Failure # n`` block per failure: the last one counts). The first
    line, not the last: a message may go on over several lines (torch's refusal of a
    checkpoint ends with a line about its documentation)."""
    lines = [line.rstrip() for line in text.splitlines()]
    blocks = [i for i, line in enumerate(lines) if line.startswith("Failure # ")]
    if blocks:
        lines = lines[blocks[-1] + 1:]
    frames = [i for i, line in enumerate(lines) if line.startswith(" ")
              and line.lstrip().startswith('File "')]
    if frames:  # the exception's own line follows the last frame's indented source lines
        for line in lines[frames[-1] + 1:]:
            if line.strip() and not line[0].isspace():
                return line.strip()[:REASON_CHARS]
    shown = [line.strip() for line in lines if line.strip()]
    return shown[-1][:REASON_CHARS] if shown else NO_REASON


def failure_reason(trial) -> str:
    """Why a Tune trial failed (see :func:`error_reason`). Tune writes each failure's text to
    the trial's error file in the driver's staging folder before it calls the callbacks (the
    copy in the trial's storage, which ``Trial.get_error`` reads, comes later)."""
    text = None
    try:
        local = getattr(trial, "error_file", None)
        if local and Path(local).is_file():
            text = Path(local).read_text(errors="replace")
        elif callable(getattr(trial, "get_error", None)):
            text = trial.get_error()
    except Exception:  # storage gone or unreadable: say so, do not break the view
        text = None
    return error_reason(str(text)) if text else NO_REASON


def format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressView(Callback):
    """A Ray Tune callback that draws the suite's progress (runs in the driver)."""

    def __init__(self, suite: str, total: int, already_done: int = 0,
                 console: Console | None = None) -> None:
        self.suite = suite
        self.total = total
        self.already_done = already_done
        self.console = console or Console(stderr=True)
        self.started = time.monotonic()
        self.running: dict[str, str] = {}  # trial key -> latest status line
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.live: Live | None = None

    def __getstate__(self) -> dict:
        # Tune pickles its run config (callbacks included); the terminal handles stay behind
        state = dict(self.__dict__)
        state["console"] = None
        state["live"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.console = Console(stderr=True)

    # -- Tune hooks -----------------------------------------------------------------------
    def setup(self, **info) -> None:
        self.live = Live(self.render(), console=self.console, refresh_per_second=2,
                         transient=False)
        self.live.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running[self.key(trial)] = "starting"
        self.refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        shown = {k: v for k, v in result.items()
                 if k.startswith((rs.VALID_PREFIX, rs.TEST_PREFIX)) and isinstance(v, float)}
        metric = next(iter(sorted(shown.items())), None)
        line = f"step {result.get('step', '?')}"
        if metric:
            line += f"  {metric[0]} {metric[1]:.3g}"
        self.running[self.key(trial)] = line
        self.refresh()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        key = self.key(trial)
        self.running.pop(key, None)
        self.failed.pop(key, None)
        self.done.add(key)
        self.refresh()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        key = self.key(trial)
        self.running.pop(key, None)
        self.failed[key] = failure_reason(trial)
        self.refresh()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.running[self.key(trial)] = (f"retrying from its last checkpoint after: "
                                         f"{failure_reason(trial)}")
        self.refresh()

    def on_experiment_end(self, trials, **info) -> None:
        self.stop()

    # -- drawing --------------------------------------------------------------------------
    @staticmethod
    def key(trial) -> str:
        return trial.config.get("trial", {}).get("key", trial.trial_id)

    def counts(self) -> dict[str, int]:
        done = len(self.done) + self.already_done
        pending = self.total - done - len(self.running) - len(self.failed)
        return {"done": done, "running": len(self.running), "failed": len(self.failed),
                "pending": max(pending, 0)}

    def render(self) -> Group:
        c = self.counts()
        head = Text.assemble(
            (f"{self.suite}  ", "bold"),
            f"done {c['done']}/{self.total}  ", (f"running {c['running']}  ", "cyan"),
            (f"failed {c['failed']}  ", "red" if c["failed"] else ""),
            f"pending {c['pending']}  elapsed {format_elapsed(time.monotonic() - self.started)}")
        table = Table(show_header=False, box=None, padding=(0, 2))
        for key, line in sorted(self.running.items()):
            table.add_row(Text(key, "cyan"), line)
        for key, reason in sorted(self.failed.items()):
            # fold, not ellipsis: a path in the reason stays whole, over several lines
            table.add_row(Text(key, "red"), Text(f"FAILED: {reason}", overflow="fold"))
        return Group(head, table)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def stop(self) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.stop()
            self.live = None


_VIEWS: dict[str, Callback] = {}  # relay name -> the live view of this process


class ViewRelay(Callback):
    """Passes Tune's events on to the live view registered under ``name`` in this process.

    Tune pickles an experiment's callbacks with it and a restored experiment keeps them
    (``Tuner.restore`` takes no new ones); a relay pickles as its name alone, so the launch
    that resumes an experiment registers its own view under the same name and sees the
    events. Without a registered view the events go nowhere.
    """

    def __init__(self, name: str, view: Callback | None = None) -> None:
        self.name = name
        if view is not None:
            _VIEWS[name] = view

    def release(self) -> None:
        """Forget this process's view (the experiment is over)."""
        _VIEWS.pop(self.name, None)

    def __getstate__(self) -> dict:
        return {"name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.name = state["name"]

    def target(self) -> Callback | None:
        """The view registered under this relay's name, if any."""
        return _VIEWS.get(self.name)

    def setup(self, **info) -> None:
        if (view := self.target()) is not None:
            view.setup(**info)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if (view := self.target()) is not None:
            view.on_trial_start(iteration, trials, trial, **info)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if (view := self.target()) is not None:
            view.on_trial_result(iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if (view := self.target()) is not None:
            view.on_trial_complete(iteration, trials, trial, **info)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if (view := self.target()) is not None:
            view.on_trial_error(iteration, trials, trial, **info)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        if (view := self.target()) is not None:
            view.on_trial_recover(iteration, trials, trial, **info)

    def on_experiment_end(self, trials, **info) -> None:
        if (view := self.target()) is not None:
            view.on_experiment_end(trials, **info)
