"""Multi-task curriculum (README "Techniques": train.curriculum.kind multitask): several tasks
in one trial.

The trial's own task (evaluated and tested) and the auxiliary ``tasks`` share the encoder and
decoder; a task whose vocabularies differ has its own embeddings and output layer. Each step
draws one batch per active task and minimises L_total = sum_i w_i(t) L_i with
w_i(t) = softmax(log(perf_i(t)) / tau) over the active tasks (tau: ``temperature``), perf_i a
running token accuracy (floored at ``perf_floor`` so the log stays finite). Progressive
introduction: tasks enter in the order given (the auxiliary tasks as declared, the trial's
task last, or first with ``main_first``), one every ``introduce_every`` steps, and stay in
the mix.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from lstm_harness.registry import TaskLookupError, load_task_class
from lstm_harness.strict import Strict
from lstm_harness.tasks.base import Seq2SeqBatch, Task
from lstm_harness.training.schedules import RunningAccuracy, task_weights

TASK_STREAM = 104_729  # separates the seed streams of the tasks' batches


class TaskRef(Strict):
    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def check(self) -> TaskRef:
        try:
            cls = load_task_class(self.name)
        except TaskLookupError as exc:
            raise ValueError(str(exc)) from None
        cls.Params.model_validate(self.params)
        return self

    def build(self) -> Task:
        cls = load_task_class(self.name)
        return cls(cls.Params.model_validate(self.params))


class MultiTaskCurriculum:
    """The same interface as :class:`~harness.training.curriculum.Curriculum`."""

    def __init__(self, cfg, main: Task, aux: list[Task], labels: list[str]) -> None:
        self.cfg = cfg
        self.tasks = [main, *aux]  # index 0 is the trial's task (the model's task 0)
        self.labels = labels
        order = list(range(1, len(self.tasks)))
        self.order = [0, *order] if cfg.main_first else [*order, 0]
        self.performance = [RunningAccuracy(cfg.ema) for _ in self.tasks]
        self.last: dict[str, float] = {}

    def active(self, step: int) -> list[int]:
        """Task indices in the mix at ``step`` (introduction order)."""
        if self.cfg.introduce_every == 0:
            return list(self.order)
        return self.order[: 1 + step // self.cfg.introduce_every]

    def weights(self, step: int) -> dict[int, float]:
        active = self.active(step)
        perf = [max(self.performance[i].value, self.cfg.perf_floor) for i in active]
        return dict(zip(active, task_weights(perf, self.cfg.temperature), strict=True))

    def prepare(self, step: int, model, device) -> None:
        return None

    def parts(self, step: int, batch_size: int, seed: int
              ) -> list[tuple[int, float, Seq2SeqBatch]]:
        weights = self.weights(step)
        self.last = {f"curriculum.weight.{self.labels[i]}": w for i, w in weights.items()}
        return [(i, w, self.tasks[i].train_batch(step, batch_size, seed + TASK_STREAM * i))
                for i, w in weights.items()]

    def observe(self, token_accuracy: float, task_index: int = 0) -> None:
        self.performance[task_index].update(token_accuracy)

    def state_dict(self) -> dict:
        return {"performance": [p.value for p in self.performance]}

    def load_state_dict(self, state: dict) -> None:
        for p, value in zip(self.performance, state["performance"], strict=True):
            p.value = float(value)
