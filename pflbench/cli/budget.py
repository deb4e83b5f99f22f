"""``budget check`` and ``budget update``: uplink bytes per client-round against a budget file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from tabulate import tabulate

from pflbench.errors import UserError
from pflbench.cli.common import (
    app, _err,
)


# The suite's engine, orchestration and results are imported inside the commands: they load
# torch (and matplotlib), which `pflbench --help` and `pflbench list` do without.


budget_app = typer.Typer(help="The communication budget: uplink bytes per client-round, measured, against a budget file.",
                         no_args_is_help=True)


app.add_typer(budget_app, name="budget")
_budget_file = typer.Option(Path("budget.json"), "--budget", help="the budget file (JSON)")
_budget_methods = typer.Option(None, help="comma-separated methods (default: every method in the budget file)")
_budget_codecs = typer.Option(None, help="comma-separated codecs (default: the budget file's, else fp32,fp16,int8,topk:0.1)")


def _budget_lines(budget: Path, methods: Optional[str], codecs: Optional[str], new_file: bool = False):
    from pflbench.federation.codec import make_codec
    from pflbench.orchestration import budget as b

    data = {"about": b.ABOUT, "model": "tiny", b.KEY: {}} if new_file and not budget.exists() else b.read(budget)
    codec_list = [c.strip() for c in codecs.split(",") if c.strip()] if codecs else None
    for c in codec_list or []:
        make_codec(c)  # an unknown codec is one line, before anything runs
    method_list = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    if new_file and not method_list and not data[b.KEY]:
        raise UserError(f"{budget} is new: name the methods to budget with --methods")
    return data, b.compare(data, method_list, codec_list, progress=lambda what: _err(f"measuring {what}"))


def _budget_table(lines) -> str:
    rows = [[l.method, l.codec, "" if l.budget is None else f"{l.budget:,}", f"{l.measured:,}",
             "" if l.ratio is None else f"{l.ratio:.3f}", l.verdict] for l in lines]
    return tabulate(rows, headers=["method", "codec", "budget", "measured", "ratio", ""], tablefmt="github", disable_numparse=True)


@budget_app.command("check")
def budget_check(budget: Path = _budget_file, methods: Optional[str] = _budget_methods, codecs: Optional[str] = _budget_codecs) -> None:
    """Measure uplink bytes per client-round and compare with the budget: exit 1 if any rose."""
    data, lines = _budget_lines(budget, methods, codecs)
    print(_budget_table(lines))
    rose = [l for l in lines if l.verdict == "ROSE"]
    fell = [l for l in lines if l.verdict == "fell"]
    new = [l for l in lines if l.verdict == "new"]
    if fell:
        print(f"{len(fell)} figure(s) fell: record them with `pflbench budget update --budget {budget}`")
    if new:
        print(f"{len(new)} figure(s) not in the budget: add them with `pflbench budget update --budget {budget}`")
    if rose:
        print(f"uplink rose for {', '.join(sorted({f'{l.method}/{l.codec}' for l in rose}))}: over budget")
        raise typer.Exit(1)


@budget_app.command("update")
def budget_update(budget: Path = _budget_file, methods: Optional[str] = _budget_methods, codecs: Optional[str] = _budget_codecs) -> None:
    """Measure and write the figures into the budget file (created if missing)."""
    from pflbench.orchestration import budget as b

    data, lines = _budget_lines(budget, methods, codecs, new_file=True)
    b.write(budget, b.updated(data, lines))
    print(_budget_table(lines))
    print(f"written: {budget}")
