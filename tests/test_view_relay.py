"""Live views reach Tune through relays that pickle as a name: a restored experiment (whose
callbacks Tune unpickles) reports to the resuming launch's own view."""

from __future__ import annotations

import pickle

from ray.tune import Callback

from lstm_harness.progress import ViewRelay


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def setup(self, **info) -> None:
        self.events.append("setup")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.events.append(f"start {trial}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.events.append(f"result {trial} {result['step']}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.events.append(f"complete {trial}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.events.append(f"error {trial}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.events.append(f"recover {trial}")

    def on_experiment_end(self, trials, **info) -> None:
        self.events.append("end")


def drive(relay: ViewRelay) -> None:
    relay.setup()
    relay.on_trial_start(0, [], "a")
    relay.on_trial_result(1, [], "a", {"step": 3})
    relay.on_trial_recover(2, [], "a")
    relay.on_trial_error(3, [], "b")
    relay.on_trial_complete(4, [], "a")
    relay.on_experiment_end([])


def test_a_restored_relay_reports_to_the_resuming_launchs_view() -> None:
    first = Recorder()
    relay = ViewRelay("exp#0", first)
    saved = pickle.dumps(relay)  # what Tune keeps with the experiment: the name only
    relay.release()
    second = Recorder()
    ViewRelay("exp#0", second)  # the resuming launch registers its own view
    restored = pickle.loads(saved)
    drive(restored)
    assert first.events == []
    assert second.events == ["setup", "start a", "result a 3", "recover a", "error b",
                              "complete a", "end"]
    restored.release()


def test_without_a_registered_view_events_go_nowhere() -> None:
    relay = pickle.loads(pickle.dumps(ViewRelay("nobody#0")))
    drive(relay)  # no error
    assert relay.target() is None
