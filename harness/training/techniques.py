"""The training techniques a trial switches on, bundled for the loop and its checkpoints:
curriculum, sequence-level objective, gradient clipper, learning-rate scheduler and dropout
schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from lstm_harness import run_schema as rs
from lstm_harness.models.dropout import DropoutRates, set_dropout_rates
from lstm_harness.tasks.base import Task
from lstm_harness.training.clipping import GradientClipper
from lstm_harness.training.curriculum import Curriculum
from lstm_harness.training.lr_schedules import make_lr_scheduler
from lstm_harness.training.multitask import MultiTaskCurriculum
from lstm_harness.training.schedules import dropout_scale, teacher_forcing_prob
from lstm_harness.training.sequence_level import SequenceObjective

if TYPE_CHECKING:  # annotations only: the config layer sits above this one
    from lstm_harness.config import TrainConfig

RATE_NAMES = [name for name in DropoutRates.model_fields if name != "variational"]


class Techniques:
    def __init__(self, cfg: TrainConfig, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, task: Task,
                 scorer: torch.nn.Module | None = None,
                 aux_tasks: list[Task] | None = None) -> None:
        self.cfg = cfg
        if cfg.curriculum.kind == "multitask":
            refs = cfg.curriculum.tasks
            labels = [task.name, *[r.label or r.name for r in refs]]
            self.curriculum = MultiTaskCurriculum(cfg.curriculum, task, aux_tasks or [], labels)
        else:
            self.curriculum = Curriculum(cfg.curriculum, task, cfg.steps, scorer)
        self.objective = SequenceObjective(cfg.loss, task.max_target_len + 1,
                                           getattr(task, "default_reward", None))
        self.clipper = GradientClipper(cfg.clip)
        self.scheduler = make_lr_scheduler(optimizer, cfg.lr_schedule, cfg.steps)
        self.optimizer = optimizer
        base = getattr(model, "rates", DropoutRates()).model_dump()
        self.base_rates = {name: base[name] for name in RATE_NAMES if base[name] > 0}

    def teacher_forcing_prob(self, step: int) -> float:
        """eps_i of the scheduled-sampling schedule."""
        return teacher_forcing_prob(self.cfg.sampling, step)

    def apply_dropout_schedule(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """p_t = p_0 exp(-lambda t) for every non-zero base rate p_0; returns the rates."""
        schedule = self.cfg.dropout_schedule
        if schedule.kind == "constant" or not self.base_rates:
            return {rs.TRAIN_DROPOUT_PREFIX + k: v for k, v in self.base_rates.items()}
        scale = dropout_scale(schedule.kind, schedule.lam, step)
        rates = {name: p0 * scale for name, p0 in self.base_rates.items()}
        set_dropout_rates(model, **rates)
        return {rs.TRAIN_DROPOUT_PREFIX + k: v for k, v in rates.items()}

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"curriculum": self.curriculum.state_dict(),
                "clipper": self.clipper.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "objective": self.objective.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curriculum.load_state_dict(state["curriculum"])
        self.clipper.load_state_dict(state["clipper"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.objective.load_state_dict(state.get("objective", {}))
