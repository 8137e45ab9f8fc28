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
TAG_PARENT = "mlflow.parentRunId"

ROLE_LAUNCH = "launch"
ROLE_TRIAL = "trial"

VALID_PREFIX = "valid."
TEST_PREFIX = "test."
REFERENCE_PREFIX = "reference."  # + baseline name + "." + metric: a task's trivial baseline
TRAIN_LOSS = "train.loss"

COST_PARAMS = "cost.params"
COST_WALL = "cost.wall_time_s"
COST_TOKENS_PER_S = "cost.tokens_per_s"
COST_PEAK_MEM = "cost.peak_mem_mb"
COST_METRICS = {
    COST_PARAMS: "params",
    COST_WALL: "wall s/trial",
    COST_TOKENS_PER_S: "train tok/s",
    COST_PEAK_MEM: "peak MB",
}
