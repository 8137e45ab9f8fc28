"""``lstm-harness``: run, validate, tabulate and report ablation suites.

Exit codes: 0 everything finished; 1 some trials failed (the rest of the suite completed);
2 bad input (suite, task, tracking store), nothing launched.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT = 0, 1, 2

# soft_wrap: never break a line at the terminal width (messages stay greppable, one per line)
console = Console(stderr=True, highlight=False, soft_wrap=True)


def error(message: str) -> int:
    """Print ``error: <line>`` for every line of ``message``; the bad-input exit code."""
    # escape: paths and user-written names may contain "[...]", which rich would read as markup
    for line in message.splitlines() or [""]:
        console.print(f"[bold red]error:[/] {escape(line)}")
    return EXIT_BAD_INPUT


def bounded_int(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high] (argparse prints the message, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range (allowed: {span})")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstm-harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_store(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                       "$MLFLOW_TRACKING_URI, else sqlite under --runs-dir)")
        p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                       help="working state: MLflow database, Ray storage (default: runs/)")
        p.add_argument("--results-dir", type=Path, default=None,
                       help="where <suite>/ is written (default: results/, or results/<sub>/ "
                       "for a suite in ablations/<sub>/, e.g. results/papers/)")

    run = sub.add_parser("run", help="run a suite (resumes it if it ran before)")
    run.add_argument("suite", type=Path)
    with_store(run)
    run.add_argument("--address", help="join a Ray cluster (e.g. 'auto'); default: local Ray")
    run.add_argument("--max-concurrent", type=bounded_int(1),
                     help="at most this many trials at once")
    run.add_argument("--max-failures", type=bounded_int(0), default=2,
                     help="retries of a crashed trial from its last checkpoint (default: 2)")
    run.add_argument("--no-progress", action="store_true", help="no live progress view")

    validate = sub.add_parser("validate", help="check a suite file without running it")
    validate.add_argument("suite", type=Path)

    table = sub.add_parser("table", help="write results/<suite>/ tables from MLflow")
    table.add_argument("suite", type=Path)
    with_store(table)

    report = sub.add_parser("report", help="write results/<suite>/report.html (one "
                            "self-contained page: table, figures, diagnostics) from MLflow")
    report.add_argument("suite", type=Path)
    with_store(report)

    sub.add_parser("tasks", help="list installed tasks and their parameters")

    ui = sub.add_parser("ui", help="open the MLflow UI on 127.0.0.1")
    with_store(ui)
    ui.add_argument("--port", type=bounded_int(1, 65535), default=5000)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                    "127.0.0.1, this machine only; the UI has no login)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.invocation = shlex.join(["lstm-harness", *argv])
    handler = {"run": cmd_run, "validate": cmd_validate, "table": cmd_table,
               "report": cmd_report, "tasks": cmd_tasks, "ui": cmd_ui}[args.command]
    return handler(args)


def load(path: Path, check_data: bool = False):
    """The validated suite, or None after printing why not. ``check_data``: also read the
    tasks' local data files (``validate`` and ``run``; not needed to read results)."""
    from lstm_harness.suite import SuiteError, load_suite

    try:
        suite = load_suite(path)
    except SuiteError as exc:
        error(str(exc))
        return None
    if check_data:
        from lstm_harness.data_check import data_file_errors

        problems = data_file_errors(suite)
        if problems:
            error("\n".join(f"{path}: {line}" for line in problems))
            return None
    return suite


def cmd_validate(args) -> int:
    suite = load(args.suite, check_data=True)
    if suite is None:
        return EXIT_BAD_INPUT
    trials = suite.trials()
    combos = len(trials) // (len(suite.spec.seeds) * len(suite.spec.tasks))
    search = ""
    if suite.spec.search.kind == "optuna":
        studies = combos * len(suite.spec.tasks)
        search = (f", after {studies * suite.spec.search.trials} search trials ({studies} Optuna "
                  f"studies x {suite.spec.search.trials} trials)")
    console.print(f"{escape(str(args.suite))}: valid — {len(trials)} trials "
                  f"({combos} variant combinations x {len(suite.spec.tasks)} tasks x "
                  f"{len(suite.spec.seeds)} seeds){search}")
    return EXIT_OK


def cmd_run(args) -> int:
    from lstm_harness.reporting.provenance import git_commit
    from lstm_harness.reporting.results import write_results
    from lstm_harness.runner import RunOptions, run_suite
    from lstm_harness.tracking import (
        TrackingError,
        check_store,
        resolve_tracking_uri,
        writable_problem,
    )

    suite = load(args.suite, check_data=True)
    if suite is None:
        return EXIT_BAD_INPUT
    uri = resolve_tracking_uri(args.tracking_uri, args.runs_dir)
    # checked before anything is created or started: nothing is launched on bad input
    try:
        check_store(uri)
    except TrackingError as exc:
        return error(str(exc))
    problem = writable_problem(args.runs_dir)
    if problem:
        return error(f"--runs-dir {args.runs_dir} (Ray's trial storage) cannot be written: "
                     f"{problem}")
    problem = cluster_problem(args.address)
    if problem:
        return error(problem)
    address = args.address or os.environ.get("RAY_ADDRESS")  # ray.init would join it too
    command = args.invocation
    commit = git_commit(Path.cwd())  # the code that runs: HEAD at launch, not at the end
    opts = RunOptions(tracking_uri=uri, runs_dir=args.runs_dir, address=address,
                      max_concurrent=args.max_concurrent, max_failures=args.max_failures,
                      command=command, show_progress=not args.no_progress)
    try:
        outcome = run_suite(suite, opts)
    except TrackingError as exc:
        return error(str(exc))
    except ConnectionError as exc:
        return error(f"cannot reach the Ray cluster at {address!r}: {exc}")
    # trials Tune lost without an error of their own (an actor that died before it ran)
    lost = outcome.total - outcome.finished - len(outcome.failed)
    summary = (f"{outcome.finished}/{outcome.total} trials finished"
               + (f" ({outcome.skipped} from earlier launches)" if outcome.skipped else "")
               + (f", {len(outcome.failed)} failed" if outcome.failed else "")
               + (f", {lost} did not finish (no reason recorded: see Ray's messages above)"
                  if lost > 0 else ""))
    out_dir = results_folder(args.results_dir, args.suite, suite.name)
    written = write_results(suite, uri, out_dir, command=command, summary=summary,
                            commit=commit)
    for key, reason in sorted(outcome.failed.items()):
        console.print(f"[red]FAILED[/] {escape(key)}: {escape(reason)}")
    table = next((p for p in written if p.name == "table.md"), out_dir)
    console.print(f"[bold]{escape(suite.name)}[/]: {escape(summary)}; table: "
                  f"{escape(str(table))}")
    return EXIT_TRIALS_FAILED if outcome.failed or lost > 0 else EXIT_OK


def results_folder(results_dir: Path | None, suite_file: Path, name: str) -> Path:
    """Where a suite's results go: ``<results_dir>/<name>``; without ``--results-dir``,
    ``results/<name>``, or ``results/<sub>/<name>`` for a suite file in ``ablations/<sub>/``
    (the paper reproductions: ``ablations/papers/X.yaml`` -> ``results/papers/X``)."""
    if results_dir is not None:
        return results_dir / name
    parents = suite_file.resolve().parent.parts
    if "ablations" in parents:
        below = parents[len(parents) - parents[::-1].index("ablations"):]
        return Path("results", *below, name)
    return Path("results") / name


def cluster_problem(address: str | None) -> str | None:
    """Why ``--address`` (without it, ``$RAY_ADDRESS``, which ``ray.init`` reads then) leads
    to no Ray cluster (None: it does, or neither is set). A quick TCP check: ``ray.init``
    itself retries for minutes on an address where nothing listens."""
    from lstm_harness.endpoints import ray_address_problem

    source = "--address"
    if address is None and os.environ.get("RAY_ADDRESS"):
        address, source = os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    problem = ray_address_problem(address)
    if problem is None:
        return None
    return (f"cannot reach the Ray cluster at {source} {address!r}: {problem}. Start its head "
            "with `ray start --head` and pass the address it prints (host:port, or auto on "
            "the head itself), or leave --address out (and $RAY_ADDRESS unset) to run on this "
            "machine.")


def cmd_table(args) -> int:
    from lstm_harness.reporting.results import write_results
    from lstm_harness.tracking import resolve_tracking_uri

    suite = load(args.suite)
    if suite is None:
        return EXIT_BAD_INPUT
    uri = resolve_tracking_uri(args.tracking_uri, args.runs_dir)
    command = args.invocation
    written = write_results(suite, uri, results_folder(args.results_dir, args.suite, suite.name),
                            command=command,
                            summary="tables rebuilt from MLflow")
    for path in written:
        console.print(f"wrote {path}")
    return EXIT_OK


def cmd_report(args) -> int:
    from lstm_harness.reporting.report import ReportError, write_report
    from lstm_harness.tracking import resolve_tracking_uri

    suite = load(args.suite)
    if suite is None:
        return EXIT_BAD_INPUT
    uri = resolve_tracking_uri(args.tracking_uri, args.runs_dir)
    try:
        path = write_report(suite, uri, results_folder(args.results_dir, args.suite, suite.name),
                            command=args.invocation)
    except ReportError as exc:
        return error(str(exc))
    console.print(f"wrote {path}")
    return EXIT_OK


def cmd_tasks(args) -> int:
    from lstm_harness.registry import TaskLookupError, installed_task_names, load_task_class

    status = EXIT_OK
    for name in installed_task_names():
        try:
            cls = load_task_class(name)
        except TaskLookupError as exc:
            console.print(f"[red]{exc}[/]")
            status = EXIT_BAD_INPUT
            continue
        print(f"{name} ({cls.kind}): metrics {', '.join(cls.metric_names())}")
        for field, info in cls.Params.model_fields.items():
            default = info.get_default(call_default_factory=True)
            if hasattr(default, "model_dump"):
                default = default.model_dump()
            line = f"    {field}: {type_name(info.annotation)} = {default!r}"
            print(line + (f"  # {info.description}" if info.description else ""))
    return status


def type_name(annotation) -> str:
    """A readable type: ``int``, ``str | None``, ``Literal['a', 'b']``."""
    plain = getattr(annotation, "__name__", None)
    if plain and plain not in ("Literal", "Optional", "Union"):
        return plain
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """The MLflow UI command line (the interpreter's own mlflow, not whichever is on PATH)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--host", host, "--port", str(port)]


def cmd_ui(args) -> int:
    from lstm_harness.endpoints import is_loopback, port_problem
    from lstm_harness.tracking import TrackingError, check_store, resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(args.tracking_uri, args.runs_dir)
    try:
        check_store(uri, absolute=False)  # the UI runs in this working directory
    except TrackingError as exc:
        return error(str(exc))
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return error(f"no MLflow database at {db} (run a suite first, or pass --runs-dir / "
                     "--tracking-uri)")
    problem = port_problem(args.host, args.port)
    if problem:
        return error(f"cannot start the MLflow UI: {problem}; pick another port with --port "
                     "(or another --host)")
    if not is_loopback(args.host):
        console.print(f"[yellow]warning:[/] the MLflow UI listens on {escape(args.host)}: other "
                      "machines can reach it, and it has no login")
    console.print(f"MLflow UI on http://{args.host}:{args.port} (store {uri})")
    try:
        return subprocess.call(ui_command(uri, args.host, args.port))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
