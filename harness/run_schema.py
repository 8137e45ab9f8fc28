"""Names shared by the writer (trial, tracking) and the readers (tables, plots) of MLflow runs.

A suite is one MLflow experiment (named after the suite). Each launch of ``lstm-harness run``
opens a parent run; each trial is a child run carrying the tags below. Metrics:
``valid.<m>`` per evaluation step, ``test.<m>`` once at the end (``<m>`` free-running,
``<m>_tf`` teacher-forced), ``train.loss`` per logged step, the ``cost.*`` metrics, and
``reference.<baseline>.<m>``: the task's trivial baselines on the test split (reference rows).
"""

TAG_ROLE = "harness.role"  # "launch" (parent) or "trial"
TAG_SUITE = "harness.suite"
TAG_TRIAL_KEY = "harness.trial_key"  # stable id of (variants, task, seed) within a suite
TAG_TASK = "harness.task"  # the task label (unique within a suite)
TAG_SEED = "harness.seed"
TAG_VARIANT_PREFIX = "harness.variant."  # + axis name -> variant name
TAG_FAILURE = "harness.failure"  # reason a trial failed, when it did
TAG_DIAGNOSTICS = "harness.diagnostics"  # the monitor's unhealthy-gate flags at the end, "; "
TAG_NODE = "harness.node_id"  # Ray node id of the trial's last attempt (absent outside Ray)
TAG_HOST = "harness.hostname"  # host name of the machine that ran the last attempt
TAG_RESUMED_FROM = "harness.resumed_from"  # steps retries resumed from, "," in order (e.g. "40")
TAG_COMMAND = "harness.command"  # the launch's command line (on the launch run)
TAG_PARENT = "mlflow.parentRunId"

ROLE_LAUNCH = "launch"
ROLE_TRIAL = "trial"

VALID_PREFIX = "valid."
TEST_PREFIX = "test."
REFERENCE_PREFIX = "reference."  # + baseline name + "." + metric: a task's trivial baseline
TRAIN_LOSS = "train.loss"
TRAIN_EPS = "train.eps"  # teacher-forcing probability eps_i of the step
TRAIN_LR = "train.lr"
TRAIN_ACCURACY = "train.accuracy"  # token accuracy of the step's (first task's) batch
TRAIN_TRUTH_FRACTION = "train.truth_fraction"  # decoder inputs that were the ground truth
TRAIN_DROPOUT_PREFIX = "train.dropout."  # + rate name ("input", "recurrent", ...)
CURRICULUM_LENGTH = "curriculum.length"
CURRICULUM_P_HARD = "curriculum.p_hard"

COST_PARAMS = "cost.params"
COST_WALL = "cost.wall_time_s"
COST_TOKENS_PER_S = "cost.tokens_per_s"
COST_PEAK_MEM = "cost.peak_mem_mb"
COST_TARGET_REACHED = "cost.target_reached"  # train.steps_to_target: 1 / 0
# train.steps_to_target: the first eval step at the target, a metric column (logged as
# test.steps_to_target where reached; lower is better)
STEPS_TO_TARGET = "steps_to_target"
COST_METRICS = {
    COST_PARAMS: "params",
    COST_WALL: "wall s/trial",
    COST_TOKENS_PER_S: "train tok/s",
    COST_PEAK_MEM: "peak MB",
    COST_TARGET_REACHED: "target reached",
}

# --- training diagnostics (harness/diagnostics/*; read by tables, diagnostic_plots, report) ---
# per monitoring step: f"gates.{stack}.l{k}.{gate}.{stat}", stack "enc" | "dec" (or "enc0", ...),
# gate one of GATES, stat one of GATE_STATS ("healthy" is 1.0 / 0.0); bidirectional layers also
# per direction: f"gates.{stack}.l{k}.{fwd|bwd}.{gate}.{stat}" (the plain key pools both)
GATE_PREFIX = "gates."
GATES = ("input", "forget", "output", "cell", "transform")  # transform: highway layers
GATE_STATS = ("mean", "var", "saturated", "healthy")
GATE_KEY_PATTERN = (r"^gates\.(?P<stack>[^.]+)\.l(?P<layer>\d+)(?:\.(?P<direction>fwd|bwd))?"
                    r"\.(?P<gate>[a-z_]+)\.(?P<stat>mean|var|saturated|healthy)$")
CELL_PREFIX = "cells."  # f"cells.{stack}.l{k}.utilisation" / ".norm"
GRAD_NORM = "grad.norm"  # G_t, every step
GRAD_NORM_MEAN = "grad.norm_mean"  # moving average of G_t
GRAD_ANOMALY = "grad.anomaly"  # 1.0 at a step flagged as an anomaly
GRAD_LAYER_PREFIX = "grad.layer."  # + parameter group: that group's gradient norm
LANDSCAPE_TOP_EIG = "landscape.top_eigenvalue"
LANDSCAPE_PREDICTIVENESS = "landscape.predictiveness"
LANDSCAPE_DISTANCE = "landscape.distance"
INFO_MI_PREFIX = "info.mi.k"  # + k (1..K): mutual information I(h_t; y_{t+k}) in bits

# once, at the end of a trial
DIAG_FORGET_HEALTHY = "diag.forget_healthy"  # 1.0 if every forget-gate mean ends healthy
DIAG_GRAD_ANOMALIES = "diag.grad_anomalies"  # number of anomalous steps
DIAG_TOP_EIG = "diag.top_eigenvalue"  # last estimate of the top Hessian eigenvalue
DIAG_METRICS = {
    DIAG_FORGET_HEALTHY: "forget healthy",
    DIAG_GRAD_ANOMALIES: "grad anomalies",
    DIAG_TOP_EIG: "top eig.",
}

# healthy ranges of the gate means (README "Diagnostics", gates); a run overrides one with
# the param f"monitor.{gate}_range" (its suite's monitor.forget_range, ...) or
# RANGE_PARAM_PREFIX + gate (e.g. "monitor.ranges.forget" = "[0.25, 0.75]")
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "forget": (0.3, 0.7),
    "input": (0.2, 0.6),
    "output": (0.2, 0.8),
}
RANGE_PARAM_PREFIX = "monitor.ranges."
RANGE_PARAM_PATTERN = r"^monitor\.(?:ranges\.(?P<a>[a-z_]+)|(?P<b>[a-z_]+)_range)$"


def gate_key(stack: str, layer: int, gate: str, stat: str = "mean",
             direction: str | None = None) -> str:
    """The step metric of one gate statistic, e.g. ``gates.enc.l0.forget.mean`` (with
    ``direction`` "fwd" / "bwd": ``gates.enc.l0.fwd.forget.mean``)."""
    where = f"l{layer}" + (f".{direction}" if direction else "")
    return f"{GATE_PREFIX}{stack}.{where}.{gate}.{stat}"
