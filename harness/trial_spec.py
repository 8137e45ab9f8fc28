"""One trial's identity and settings, typed: :class:`TrialSpec`.

:meth:`lstm_harness.suite.Suite.trials` builds them; the launch (runner.py, search.py,
launch.py), the trial (trial.py) and the tracker read them. Ray Tune carries a trial through
its ``param_space`` as plain data, so at that boundary a spec becomes a dict
(:meth:`TrialSpec.as_dict`) and back (:meth:`TrialSpec.from_dict`); the dict is also the
``trial_config.json`` artifact of the trial's MLflow run and what the suite's fingerprint
hashes, so its keys and their order are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialTask:
    """The task a trial trains on: registry name, its label in the suite, its params."""

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "params": self.params}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialTask:
        """From ``{name, label, params}`` (label defaults to the name, params to none)."""
        return cls(data["name"], data.get("label") or data["name"], data.get("params") or {})


@dataclass(frozen=True)
class SearchChoice:
    """The Optuna study whose best values a table trial runs with, and those values."""

    study: str
    values: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"study": self.study, "values": self.values}


@dataclass(frozen=True)
class TrialSpec:
    """One trial: a suite's (variants, task, seed) with its resolved config (the JSON form of
    :class:`~lstm_harness.config.TrialConfig`)."""

    key: str  # "variant/variant|task|s<seed>", stable within the suite
    suite: str
    task: TrialTask
    seed: int
    config: dict[str, Any]
    variants: dict[str, str] = field(default_factory=dict)  # axis -> variant name
    init_from: str | None = None  # key of the trial whose final model this one starts from
    search: SearchChoice | None = None  # the searched values it runs with (search: optuna)

    def as_dict(self) -> dict[str, Any]:
        """The plain-data form (Tune's param_space, trial_config.json, fingerprints); holds
        ``search`` only when set."""
        out = {"key": self.key, "suite": self.suite, "variants": self.variants,
               "task": self.task.as_dict(), "seed": self.seed, "config": self.config,
               "init_from": self.init_from}
        if self.search is not None:
            out["search"] = self.search.as_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        """The spec of :meth:`as_dict`'s form (``variants``, ``init_from`` and ``search`` may
        be missing)."""
        search = data.get("search")
        return cls(key=data["key"], suite=data["suite"], task=TrialTask.from_dict(data["task"]),
                   seed=data["seed"], config=data["config"],
                   variants=dict(data.get("variants") or {}), init_from=data.get("init_from"),
                   search=SearchChoice(search["study"], search["values"]) if search else None)

    @property
    def target(self) -> str:
        """``<variants>|<task>``: the key without its seed (one Optuna study each)."""
        return self.key.rsplit("|", 1)[0]
