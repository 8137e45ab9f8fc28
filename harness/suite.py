"""Suite files: schema, validation naming every problem in one pass, expansion into trials.

A suite is ``axes x tasks x seeds``: every combination of one named variant per axis, on every
task, for every seed, is one trial. Variants are dotted overrides of the suite's ``base`` trial
config (see :mod:`harness.config`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lstm_harness import run_schema as rs
from lstm_harness.config import TrialConfig, set_dotted
from lstm_harness.head_options import head_problems
from lstm_harness.models.losses import SEQUENCE_LOSSES
from lstm_harness.registry import TaskLookupError, load_task_class
from lstm_harness.search_space import Distribution, parse_distribution
from lstm_harness.tasks.base import TaskBase, length_bucket_metric, unbucketed
from lstm_harness.trial_spec import TrialSpec, TrialTask

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
VALID = rs.VALID_PREFIX


class SuiteError(Exception):
    """A suite that cannot run; the message names the file, the field and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(Strict):
    name: str
    label: str | None = Field(None, pattern=NAME_PATTERN)
    params: dict[str, Any] = Field(default_factory=dict)


class TableSpec(Strict):
    rows: list[str] | None = None
    columns: str | None = None
    baseline: str | dict[str, str] | None = None
    alpha: float = Field(0.05, gt=0, lt=1)


class Resources(Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class AshaSpec(Strict):
    """Asynchronous successive halving (Li et al. 2020) over a search's trials: at
    ``grace_period``, ``grace_period * reduction_factor``, ... validation evaluations, a trial
    continues only if it is in the top ``1 / reduction_factor`` of the trials at that rung."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class SearchSpec(Strict):
    """``grid`` (default): every combination of the axes' variants. ``optuna``: for each
    (variant combination, task), an Optuna search over ``space`` on the validation ``metric``
    (``trials`` trials, ``max_concurrent`` at once, training seed ``seed``), then the best
    configuration re-run over the suite's ``seeds`` for the table (see harness/search.py)."""

    kind: Literal["grid", "optuna"] = "grid"
    metric: str | None = Field(None, description="a metric of every task, optionally "
                               "prefixed 'valid.'; default: the suite's first metric")
    trials: int = Field(10, ge=1)
    max_concurrent: int = Field(2, ge=1)
    seed: int = 0
    asha: AshaSpec | None = None
    space: dict[str, Any] = Field(default_factory=dict)

    def distributions(self) -> dict[str, Distribution]:
        """The space as parsed distributions (the suite was validated)."""
        return {path: parse_distribution(raw) for path, raw in self.space.items()}


class SuiteFile(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    tasks: list[TaskSpec] = Field(min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, dict[str, dict[str, Any] | None]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # None: every metric the tasks declare (default_metrics), filled in by load_suite
    metrics: list[str] | None = Field(None, min_length=1)
    table: TableSpec = Field(default_factory=TableSpec)
    resources: Resources = Field(default_factory=Resources)
    search: SearchSpec = Field(default_factory=SearchSpec)


@dataclass(frozen=True)
class Suite:
    """A validated suite with its resolved tasks."""

    path: Path
    spec: SuiteFile
    task_classes: dict[str, type[TaskBase]]  # task label -> class

    @property
    def name(self) -> str:
        return self.spec.name

    def task_labels(self) -> list[str]:
        return [task_label(t) for t in self.spec.tasks]

    def row_axes(self) -> list[str]:
        if self.spec.table.rows is not None:
            return list(self.spec.table.rows)
        return [a for a in self.spec.axes if a != self.spec.table.columns]

    def baseline(self) -> dict[str, str]:
        """Row-axis -> baseline variant (default: each axis's first variant)."""
        given = self.spec.table.baseline
        rows = self.row_axes()
        chosen = {axis: next(iter(self.spec.axes[axis])) for axis in rows}
        if isinstance(given, str):
            chosen[rows[0]] = given
        elif isinstance(given, dict):
            chosen.update(given)
        return chosen

    def directions(self) -> dict[str, str]:
        """Better direction ("max" | "min") of every metric the tasks report, of the suite's
        per-length metrics (``<metric>_len<lo>-<hi>``) and of ``steps_to_target``."""
        out: dict[str, str] = {}
        for cls in self.task_classes.values():
            for metric in [*cls.metric_names(), *(self.spec.metrics or [])]:
                if unbucketed(metric) in cls.metrics or metric in cls.metric_names():
                    out.setdefault(metric, cls.direction(metric))
        if rs.STEPS_TO_TARGET in (self.spec.metrics or []):
            out[rs.STEPS_TO_TARGET] = "min"
        return out

    def search_metric(self) -> str:
        """The metric an Optuna search optimises on the validation split (without the
        ``valid.`` prefix): ``search.metric``, else the suite's first metric."""
        return (self.spec.search.metric or self.spec.metrics[0]).removeprefix(VALID)

    def trials(self) -> list[TrialSpec]:
        """Every trial: each combination of one variant per axis, on every task, for every
        seed, with its resolved config."""
        axes = self.spec.axes
        out = []
        for combo in variant_combinations(axes):
            variants = {axis: name for axis, (name, _) in zip(axes, combo, strict=True)}
            config = resolve_config(self.spec.base, [over or {} for _, over in combo])
            for task in self.spec.tasks:
                for seed in self.spec.seeds:
                    label = task_label(task)
                    source = config["train"]["init_from"]
                    out.append(TrialSpec(
                        key=trial_key(variants, label, seed),
                        suite=self.name,
                        variants=variants,
                        task=TrialTask(task.name, label, task.params),
                        seed=seed,
                        config=config,
                        init_from=(trial_key({**variants, **source}, label, seed)
                                   if source else None),
                    ))
        return out

    def stages(self) -> list[list[TrialSpec]]:
        """The trials in dependency order: stage 0 starts from scratch, stage s + 1 starts
        from the final models of stage s (``train.init_from``)."""
        trials = {t.key: t for t in self.trials()}
        depth: dict[str, int] = {}

        def level(key: str) -> int:
            if key not in depth:
                source = trials[key].init_from
                depth[key] = 0 if source is None else level(source) + 1
            return depth[key]

        out: list[list[TrialSpec]] = []
        for key, trial in trials.items():
            stage = level(key)
            out += [[] for _ in range(stage + 1 - len(out))]
            out[stage].append(trial)
        return out

    def fingerprint(self) -> str:
        """A short hash of everything that defines the trials (changes when the grid does)."""
        return fingerprint([t.as_dict() for t in self.trials()])


def fingerprint(value: Any) -> str:
    """A short hash of a JSON-serialisable value (trial lists, search settings)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def task_label(task: TaskSpec) -> str:
    return task.label or task.name


def trial_key(variants: dict[str, str], label: str, seed: int) -> str:
    """A stable, readable trial id: ``variant/variant|task|s<seed>``."""
    names = "/".join(variants.values()) or "baseline"
    return f"{names}|{label}|s{seed}"


def resolve_config(base: dict[str, Any], overrides: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply dotted overrides to the base config and return the full, validated config."""
    tree = copy.deepcopy(base)
    for over in overrides:
        for path, value in over.items():
            set_dotted(tree, path, copy.deepcopy(value))
    return TrialConfig.model_validate(tree).model_dump(mode="json")


# ----------------------------------------------------------------------------- validation


def format_errors(err: ValidationError, prefix: str, model: type[BaseModel] | None) -> list[str]:
    """pydantic errors as ``field.path: message; allowed: ...`` lines."""
    lines = []
    for e in err.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"])
        loc = loc.replace(".[", "[")
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        if e["type"] == "extra_forbidden":
            allowed = allowed_keys(model, [p for p in e["loc"][:-1]])
            msg = f"unknown key '{e['loc'][-1]}'"
            if allowed:
                msg += f"; allowed: {', '.join(allowed)}"
        elif e["type"] == "missing":
            msg = "required field is missing"
        else:
            msg = e["msg"]
            if "input" in e and e["type"] not in {"model_type", "dict_type"}:
                msg += f" (got {e['input']!r})"
        lines.append(f"{where}: {msg}")
    return lines


def allowed_keys(model: type[BaseModel] | None, loc: list[Any]) -> list[str]:
    """Field names of the nested pydantic model found by walking ``loc`` from ``model``."""
    node: Any = model
    for part in loc:
        if isinstance(part, int) or node is None:
            continue
        field = getattr(node, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        node = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else _model_in(annotation)
    return list(getattr(node, "model_fields", {})) if node is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML would silently
    keep the last one, dropping a variant or a setting)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_suite(path: str | Path) -> Suite:
    """Read, validate and resolve a suite file; raise :class:`SuiteError` naming every problem
    found in one pass (one line each; a check that needs a broken part is skipped)."""
    path = Path(path)
    fail = _failer(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{path}: {where}invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        fail(["(top level): a suite is a mapping with keys: " + ", ".join(SuiteFile.model_fields)])
    spec, broken, problems = _parse(raw)
    if spec is None:
        fail(problems)
    config_ok = not broken & {"base", "axes"}
    if config_ok:
        lines = _config_errors(spec)
        problems += lines
        config_ok = not lines
    task_classes: dict[str, type[TaskBase]] = {}
    tasks_ok = "tasks" not in broken
    if tasks_ok:
        _resolve_data_paths(spec, path.resolve().parent)
        task_classes, lines = _resolve_tasks(spec)
        problems += lines
        tasks_ok = not lines
    metrics_ok = tasks_ok and config_ok and "metrics" not in broken  # (steps_to_target)
    if metrics_ok:
        if spec.metrics is None:
            spec.metrics = default_metrics(task_classes)
        lines = _metric_errors(spec, task_classes)
        problems += lines
        metrics_ok = not lines
    if config_ok and tasks_ok:
        problems += _kind_errors(spec, task_classes)
        problems += _target_errors(spec, task_classes)
    if config_ok:
        problems += _init_from_errors(spec)
    if not broken & {"axes", "table"}:
        problems += _table_errors(spec)
    if config_ok and metrics_ok and "search" not in broken:
        problems += search_errors(spec, task_classes)
    if "seeds" not in broken and len(set(spec.seeds)) != len(spec.seeds):
        problems.append(f"seeds: duplicate seeds in {spec.seeds}")
    fail(problems)
    return Suite(path=path, spec=spec, task_classes=task_classes)


def _parse(raw: dict[str, Any]) -> tuple[SuiteFile | None, set[str], list[str]]:
    """(spec, top-level keys that are broken, their messages). A broken key is left out (a
    required one gets a stand-in) so the checks of the other parts still run; spec is None
    when even that does not validate."""
    try:
        return SuiteFile.model_validate(raw), set(), []
    except ValidationError as exc:
        problems = format_errors(exc, "", SuiteFile)
        broken = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    kept = {key: value for key, value in raw.items() if key not in broken}
    stand_ins = {"name": "suite", "tasks": [{"name": "copy"}]}  # checks of tasks are skipped
    kept.update({key: value for key, value in stand_ins.items() if key in broken})
    try:
        return SuiteFile.model_validate(kept), broken, problems
    except ValidationError:
        return None, broken, problems


def default_metrics(task_classes: dict[str, type[TaskBase]]) -> list[str]:
    """The metrics of a suite without ``metrics:``: every free-running metric the tasks declare
    (in task order), then their ``_tf`` / ``_mc`` variants."""
    plain = [name for cls in task_classes.values() for name in cls.metrics]
    variants = [m for cls in task_classes.values() for m in cls.metric_names()
                if m not in cls.metrics]
    return list(dict.fromkeys(plain + variants))


def _resolve_data_paths(spec: SuiteFile, folder: Path) -> None:
    """Relative ``files`` of ``source: files`` tasks are relative to the suite file's folder
    (trials run in working directories of their own): made absolute here, in place."""
    for task in spec.tasks:
        files = task.params.get("files")
        if task.params.get("source") != "files" or files is None:
            continue
        if isinstance(files, str):
            task.params["files"] = str(folder / files)  # an absolute path stays itself
        elif isinstance(files, dict):
            task.params["files"] = {k: str(folder / v) if isinstance(v, str) else v
                                    for k, v in files.items()}


def _failer(path: Path):
    def fail(lines: list[str]) -> None:
        if lines:
            raise SuiteError("\n".join(f"{path}: {line}" for line in lines))
    return fail


def _config_errors(spec: SuiteFile) -> list[str]:
    try:
        TrialConfig.model_validate(spec.base)
    except ValidationError as exc:
        return format_errors(exc, "base.", TrialConfig)
    lines: list[str] = []
    for axis, variants in spec.axes.items():
        if not variants:
            lines.append(f"axes.{axis}: an axis needs at least one variant")
        for name, over in variants.items():
            try:
                resolve_config(spec.base, [over or {}])
            except ValidationError as exc:
                lines += format_errors(exc, f"axes.{axis}.{name}: ", TrialConfig)
    if lines:
        return lines
    combos = 1
    for variants in spec.axes.values():
        combos *= len(variants)
    if combos <= 10_000:  # overrides may clash only in combination
        for combo in variant_combinations(spec.axes):
            try:
                resolve_config(spec.base, [over or {} for _, over in combo])
            except ValidationError as exc:
                names = " + ".join(f"{a}.{n}" for a, (n, _) in zip(spec.axes, combo, strict=True))
                return format_errors(exc, f"axes ({names}): ", TrialConfig)
    return lines


def _resolve_tasks(spec: SuiteFile) -> tuple[dict[str, type[TaskBase]], list[str]]:
    """Task label -> task class, and the problems of the tasks that did not resolve."""
    classes: dict[str, type[TaskBase]] = {}
    lines: list[str] = []
    for i, task in enumerate(spec.tasks):
        label = task_label(task)
        if label in classes:
            lines.append(f"tasks[{i}].label: task label '{label}' is used twice; give each "
                         "task a distinct 'label'")
            continue
        try:
            cls = load_task_class(task.name)
        except TaskLookupError as exc:
            lines.append(f"tasks[{i}].name: {exc}")
            continue
        try:
            cls.Params.model_validate(task.params)
        except ValidationError as exc:
            lines += format_errors(exc, f"tasks[{i}].params.", cls.Params)
            continue
        classes[label] = cls
    return classes, lines


def _metric_errors(spec: SuiteFile, task_classes: dict[str, type[TaskBase]]) -> list[str]:
    """Metrics no task reports. Per-length names ``<metric>_len<lo>-<hi>`` count for the
    free-running metrics of sequence-to-sequence tasks and the buckets of some trial's
    ``train.length_buckets``; ``steps_to_target`` where a trial sets
    ``train.steps_to_target``."""
    reported = {m for cls in task_classes.values() for m in cls.metric_names()}
    configs = [c["train"] for _, _, c in combo_configs(spec)]
    if any(train.get("steps_to_target") for train in configs):
        reported.add(rs.STEPS_TO_TARGET)
    plain = {m for cls in task_classes.values() if cls.kind == "seq2seq" for m in cls.metrics}
    for edges in {tuple(t["length_buckets"]) for t in configs if t.get("length_buckets")}:
        reported |= {length_bucket_metric(m, lo + 1, hi) for m in plain
                     for lo, hi in zip(edges, edges[1:], strict=False)}
    return [f"metrics[{i}]: unknown metric '{m}'; the suite's tasks report: "
            f"{', '.join(sorted(reported))} (and <metric>_len<lo>-<hi> per source length with "
            "train.length_buckets)"
            for i, m in enumerate(spec.metrics) if m not in reported]


def forecast_conflicts(config: dict[str, Any]) -> list[str]:
    """Settings of a trial config that a forecasting task cannot train with."""
    train = config["train"]
    lines = []
    if train["loss"]["kind"] != "ce" or train["loss"]["label_smoothing"] > 0:
        lines.append("train.loss: a forecasting task trains on the mean squared error; "
                     "leave loss.kind at ce and label_smoothing at 0 (token losses)")
    if train["curriculum"]["kind"] == "multitask":
        lines.append("train.curriculum.kind: multitask combines token (seq2seq) tasks only")
    return lines


def variant_combinations(axes: dict[str, dict[str, Any]]
                         ) -> Iterator[tuple[tuple[str, Any], ...]]:
    """The axis product: every combination of one (variant name, overrides) per axis, in the
    suite's axis and variant order (the one place it is computed)."""
    return itertools.product(*(list(v.items()) for v in axes.values()))


def combo_configs(spec: SuiteFile, limit: int = 10_000
                  ) -> Iterator[tuple[tuple[str, ...], str, dict[str, Any]]]:
    """(variant names, "variant a.x + b.y" or "base", resolved config) of each combination of
    one variant per axis, the first ``limit`` of them (valid: _config_errors ran first)."""
    for combo in itertools.islice(variant_combinations(spec.axes), limit):
        names = tuple(name for name, _ in combo)
        where = " + ".join(f"{a}.{n}" for a, n in zip(spec.axes, names, strict=True))
        yield names, (f"variant {where}" if where else "base"), resolve_config(
            spec.base, [over or {} for _, over in combo])


def _kind_errors(spec: SuiteFile, task_classes: dict[str, type[TaskBase]]) -> list[str]:
    """Settings a task's kind cannot train with: token losses or the multi-task curriculum on
    a forecasting task; options the task's model head does not take (head_options.py); a
    sequence-level loss with ``reward: task`` on a task without one."""
    for _, where, config in combo_configs(spec):
        loss = config["train"]["loss"]
        for label, cls in task_classes.items():
            if cls.kind == "forecast":
                problems = forecast_conflicts(config)
                if problems:
                    return [f"tasks: '{label}' is a forecasting task; {where}: {line}"
                            for line in problems]
            problems = head_problems(config, cls)
            if problems:
                return [f"tasks: '{label}' ({cls.kind}); {where}: {line}" for line in problems]
            if (cls.kind == "seq2seq" and loss["kind"] in SEQUENCE_LOSSES
                    and loss["reward"] == "task"
                  and getattr(cls, "default_reward", None) is None):
                return [f"{where}: train.loss.reward: 'task', but task '{label}' declares no "
                        "default reward; name one: bleu, rouge1, rouge2, rougeL"]
    return []


def _target_errors(spec: SuiteFile, task_classes: dict[str, type[TaskBase]]) -> list[str]:
    """``train.steps_to_target.metric`` must be a validation metric of every task (or
    ``loss``)."""
    for _, where, config in combo_configs(spec):
        target = config["train"].get("steps_to_target")
        if target is None:
            continue
        metric = target["metric"].removeprefix(VALID)
        for label, cls in task_classes.items():
            # validation reports the _tf readings; the _mc ones only the final test does
            valid = cls.metric_names() if cls.variant_suffix == "_tf" else list(cls.metrics)
            if metric != "loss" and metric not in valid:
                return [f"{where}: train.steps_to_target.metric: task '{label}' does not "
                        f"report '{metric}' on the validation split; it reports: loss, "
                        f"{', '.join(valid)}"]
    return []


def _init_from_errors(spec: SuiteFile) -> list[str]:
    """``train.init_from`` must name variants of the suite's axes, and not form a cycle."""
    axes = spec.axes
    source_of: dict[tuple[str, ...], tuple[str, ...]] = {}
    for names, where, config in combo_configs(spec):
        source = config["train"]["init_from"]
        if not source:
            continue
        for axis, variant in source.items():
            if axis not in axes:
                return [f"{where}: train.init_from: unknown axis '{axis}'; axes: "
                        f"{', '.join(axes) or 'none'}"]
            if variant not in axes[axis]:
                return [f"{where}: train.init_from: axis '{axis}' has no variant '{variant}'; "
                        f"variants: {', '.join(axes[axis])}"]
        target = tuple(source.get(axis, name) for axis, name in zip(axes, names, strict=True))
        if target == names:
            return [f"{where}: train.init_from names the trial itself"]
        source_of[names] = target
    for start in source_of:
        path, node = [start], start  # in order: each variant starts from the next
        while node in source_of:
            node = source_of[node]
            if node in path:
                cycle = [*path[path.index(node):], node]
                return [f"train.init_from: the variants {' -> '.join('/'.join(n) for n in cycle)}"
                        " start from each other (a cycle)"]
            path.append(node)
    return []


def _table_errors(spec: SuiteFile) -> list[str]:
    table, axes = spec.table, spec.axes
    names = ", ".join(axes) or "none (the suite has no axes)"
    lines = []
    for axis in table.rows or []:
        if axis not in axes:
            lines.append(f"table.rows: unknown axis '{axis}'; axes: {names}")
    if table.columns is not None:
        if table.columns not in axes:
            lines.append(f"table.columns: unknown axis '{table.columns}'; axes: {names}")
        elif table.columns in (table.rows or []):
            lines.append(f"table.columns: axis '{table.columns}' is also in table.rows")
    if lines:
        return lines
    rows = table.rows if table.rows is not None else [a for a in axes if a != table.columns]
    baseline = table.baseline
    if isinstance(baseline, str):
        if not rows:
            return ["table.baseline: the table has no row axis to take a baseline from"]
        baseline = {rows[0]: baseline}
    for axis, variant in (baseline or {}).items():
        if axis not in rows:
            lines.append(f"table.baseline: '{axis}' is not a row axis; row axes: "
                         f"{', '.join(rows) or 'none'}")
        elif variant not in axes[axis]:
            lines.append(f"table.baseline: unknown variant '{variant}' of axis '{axis}'; "
                         f"variants: {', '.join(axes[axis])}")
    return lines


# ----------------------------------------------------------------------------- search


def search_errors(spec: SuiteFile, task_classes: dict[str, type[TaskBase]]) -> list[str]:
    """``search``: grid takes no settings; optuna needs a space of real config paths with
    valid distributions, a validation metric of every task, and no ``train.init_from``."""
    search = spec.search
    if search.kind == "grid":
        given = sorted(search.model_fields_set - {"kind"})
        return [f"search: {', '.join(given)} only with kind: optuna (kind grid, the default, "
                "runs every combination of the axes' variants)"] if given else []
    lines = _metric_search_errors(spec, task_classes)
    if not search.space:
        lines.append("search.space: an optuna search needs at least one setting to search, "
                     "e.g. train.lr: {loguniform: [1.0e-4, 1.0e-2]}")
    configs = list(combo_configs(spec))
    for path, raw in search.space.items():
        where = f"search.space.{path}"
        problem = _path_error(path)
        if problem is None:
            try:
                dist = parse_distribution(raw)
            except ValueError as exc:
                problem = str(exc)
        if problem is None:
            problem = _override_clash(spec, path) or _value_error(dist, path, configs)
        if problem is not None:
            lines.append(f"{where}: {problem}")
    for _, where, config in configs:
        if config["train"]["init_from"]:
            lines.append(f"{where}: train.init_from cannot be combined with search kind "
                         "optuna (each search trains from scratch)")
            break
    if search.asha is not None and not lines:
        lines += _asha_errors(spec, configs)
    return lines


def _metric_search_errors(spec: SuiteFile, task_classes: dict[str, type[TaskBase]]
                          ) -> list[str]:
    metric = spec.search.metric or spec.metrics[0]
    if metric.startswith("test."):
        return [f"search.metric: '{metric}': a search tunes on the validation split; name "
                f"'{metric.removeprefix('test.')}' or 'valid.{metric.removeprefix('test.')}'"]
    name = metric.removeprefix(VALID)
    for label, cls in task_classes.items():
        if name not in cls.metric_names():
            return [f"search.metric: task '{label}' does not report '{name}'; it reports: "
                    f"{', '.join(cls.metric_names())}"]
    return []


def _path_error(path: str) -> str | None:
    """Why ``path`` is not a field of the trial config (None: it is one)."""
    node: Any = TrialConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = node.model_fields
        if part not in fields:
            section = ".".join(parts[:i]) or "the trial config"
            return f"unknown config field '{part}' in {section}; allowed: {', '.join(fields)}"
        annotation = fields[part].annotation
        node = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else _model_in(annotation)
        if node is None and i < len(parts) - 1:
            return f"'{'.'.join(parts[:i + 1])}' is a single setting, it has no field " \
                   f"'{parts[i + 1]}'"
    if node is not None:
        return (f"'{path}' is a section; search one of its settings: "
                f"{', '.join(f'{path}.{f}' for f in node.model_fields)}")
    return None


def _override_clash(spec: SuiteFile, path: str) -> str | None:
    """A variant that sets ``path`` (or a setting inside or around it) clashes with the
    search, which would override it."""
    for axis, variants in spec.axes.items():
        for name, over in variants.items():
            for key in over or {}:
                if key == path or key.startswith(f"{path}.") or path.startswith(f"{key}."):
                    return (f"variant axes.{axis}.{name} sets {key}, which the search would "
                            "override; search it or vary it on an axis, not both")
    return None


def _value_error(dist: Distribution, path: str,
                 configs: list[tuple[tuple[str, ...], str, dict[str, Any]]]) -> str | None:
    """The first candidate value (bound or choice) the trial config refuses."""
    for value in dist.candidates():
        for _, where, config in configs:
            try:
                resolve_config(config, [{path: value}])
            except ValidationError as exc:
                why = "; ".join(format_errors(exc, "", TrialConfig))
                with_ = f" with {where}" if where != "base" else ""
                return f"{dist.kind} value {value!r} is refused{with_}: {why}"
    return None


def _asha_errors(spec: SuiteFile,
                 configs: list[tuple[tuple[str, ...], str, dict[str, Any]]]) -> list[str]:
    """ASHA counts validation evaluations: the space must not change how many there are, and
    the grace period must leave room for a rung."""
    for path in ("train.steps", "train.eval_every"):
        if path in spec.search.space:
            return [f"search.asha: ASHA compares trials after equal numbers of evaluations; "
                    f"searching {path} changes that number: drop asha or the {path} search"]
    grace = spec.search.asha.grace_period
    for _, where, config in configs:
        evaluations = evaluation_count(config)
        if grace >= evaluations:
            return [f"search.asha.grace_period: {grace}, but {where} trains with "
                    f"{evaluations} validation evaluations (train.steps / train.eval_every); "
                    "ASHA needs grace_period below that"]
    return []


def evaluation_count(config: dict[str, Any]) -> int:
    """Validation evaluations of a trial: every ``eval_every`` steps and at the last step."""
    return -(-config["train"]["steps"] // config["train"]["eval_every"])
