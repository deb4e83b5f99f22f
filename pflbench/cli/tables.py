"""``table`` and ``report``: the leaderboard of a results folder, printed or written as files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pflbench.errors import UserError
from pflbench.cli.common import (
    app, DEFAULT_RESULTS, _err,
)


# The suite's engine, orchestration and results are imported inside the commands: they load
# torch (and matplotlib), which `pflbench --help` and `pflbench list` do without.


@app.command()
def table(
    results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="folder holding run records"),
    fmt: str = typer.Option("github", "--format", help="csv or json (the numbers behind the tables, one row per method and setting), or any tabulate format: github, plain, latex, ..."),
    rewards_plot: Optional[Path] = typer.Option(None, help="reward tasks: draw each client's helpfulness against its harmlessness, coloured by its weight, to this PNG file"),
    across: bool = typer.Option(False, "--across-models", help="each comparison (a method minus local-only or fedavg-lora, paired over seeds) on each model side by side: which claims survive a change of model"),
    across_precision: bool = typer.Option(False, "--across-precisions", help="the same, fp32 beside bf16"),
    schedulers: bool = typer.Option(False, "--schedulers", help="each scheduler against random, per method and channel: score, fairness, airtime, energy (paired over seeds)"),
    budget: Optional[str] = typer.Option(None, help="quality under a budget: per method, the best score within KIND=VALUE, KIND uplink, downlink, total (both ways; 5MB, 200kB), airtime (30s), energy (2J) or rounds (3)"),
    target: Optional[str] = typer.Option(None, help="cost to a target: per method, what it spent until its score first reached T (a score, or P% of the best method's mean); runs that never do are counted apart"),
    at_epsilon: bool = typer.Option(False, "--at-epsilon", help="--dp runs: each method minus the references at the same (ε, δ), whatever DP setting reached it (local or central, another clip or noise), paired over seeds"),
) -> None:
    """Print the leaderboard of every finished run under RESULTS_DIR."""
    from tabulate import tabulate_formats

    from pflbench.results.record import load_records
    from pflbench.results.table import render

    if fmt not in (*tabulate_formats, "csv", "json"):
        raise UserError(f"--format {fmt!r} is not a table format; choose csv, json or one of: {', '.join(sorted(tabulate_formats))}")
    if not results_dir.is_dir():
        raise UserError(f"{results_dir} is not a folder of run records")
    records = load_records(results_dir, warn=_err)
    if not records:
        raise UserError(f"no finished run records under {results_dir}")
    if sum(bool(x) for x in (schedulers, across, across_precision, at_epsilon, budget is not None, target is not None)) > 1:
        raise UserError("--schedulers, --across-models, --across-precisions, --at-epsilon, --budget and --target are separate tables: give one")
    if budget is not None or target is not None:
        from pflbench.results.protocols import budget_table, target_table

        if fmt in ("csv", "json"):
            raise UserError("--budget and --target print a table: use a tabulate --format (github, plain, latex, ...)")
        print(budget_table(records, budget, fmt) if budget is not None else target_table(records, target, fmt))
    elif at_epsilon:
        from pflbench.results.table import epsilon_table

        if fmt in ("csv", "json"):
            raise UserError("--at-epsilon prints a table: use a tabulate --format (github, plain, latex, ...)")
        print(epsilon_table(records, fmt) or "no run under RESULTS_DIR used --dp: no privacy level to pair at")
    elif schedulers:
        from pflbench.results.table import scheduler_table

        if fmt in ("csv", "json"):
            raise UserError("--schedulers prints a table: use a tabulate --format (github, plain, latex, ...)")
        print(scheduler_table(records, fmt) or "the runs under RESULTS_DIR all used one scheduler: nothing to compare")
    elif across or across_precision:
        from pflbench.results.table import across_models

        if fmt in ("csv", "json"):
            raise UserError("--across-models and --across-precisions print a table: use a tabulate --format (github, plain, latex, ...)")
        print(across_models(records, fmt, by="model" if across else "precision"))
    elif fmt == "csv":
        from pflbench.results.table import render_csv

        print(render_csv(records), end="")
    elif fmt == "json":
        from pflbench.results.record import dumps
        from pflbench.results.table import summary_rows

        print(dumps(summary_rows(records)))
    else:
        print(render(records, fmt))
    if rewards_plot is not None:
        from pflbench.results.plots import reward_scatter

        reward_scatter(records, rewards_plot)
        _err(f"plot: {rewards_plot}")


@app.command()
def report(
    results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="folder holding run records"),
    out: Path = typer.Option(Path("report"), "--out", help="folder to write the report into"),
) -> None:
    """Write the report of every finished run under RESULTS_DIR into OUT: report.md, .csv,
    .json, the figures (PNG) and report.html, one self-contained page."""
    from pflbench.results.record import load_records
    from pflbench.results.report import build

    if not results_dir.is_dir():
        raise UserError(f"{results_dir} is not a folder of run records")
    try:
        paths = build(load_records(results_dir, warn=_err), out)
    except OSError as exc:  # a read-only folder, a full disk: the runs are untouched
        raise UserError(f"cannot write the report to {out}: {exc.strerror or exc}; the run records are unchanged") from None
    for path in paths:
        print(path)
