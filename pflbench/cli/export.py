"""``export flower``: a run as a Flower app."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from pflbench.cli.common import (
    app, DEFAULT, _err, _spec, _task, _model, _channel, _scheduler, _codec, _clients, _cpr, _rounds, _steps,
    _batch, _lr, _seed, _eval_every, _opt, _device, _secagg,
)


# The suite's engine, orchestration and results are imported inside the commands: they load
# torch (and matplotlib), which `pflbench --help` and `pflbench list` do without.


export_app = typer.Typer(help="Export a run to run elsewhere.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("flower")
def export_flower(
    out: Path = typer.Option(..., "--out", help="folder to write the Flower app into"),
    method: str = typer.Option(DEFAULT.method, help="method name (see `pflbench list methods`)"),
    task: str = _task, model: Optional[str] = _model, channel: str = _channel, scheduler: str = _scheduler, codec: str = _codec,
    clients: Optional[int] = _clients, clients_per_round: Optional[int] = _cpr, rounds: Optional[int] = _rounds,
    local_steps: Optional[int] = _steps, batch_size: Optional[int] = _batch, lr: Optional[float] = _lr, seed: int = _seed,
    eval_every: int = _eval_every, opt: Optional[list[str]] = _opt, device: str = _device, secagg: bool = _secagg,
    force: bool = typer.Option(False, "--force", help="overwrite files in --out that are not this app's (your own pyproject.toml)"),
) -> None:
    """Write a Flower app (ServerApp and ClientApp, flwr >= 1.21) that runs this spec: the same
    method, codec, channel and seeds, with each client's private state kept on its node
    (--secagg: each node masks its own upload). A file of yours in --out is never overwritten
    without --force."""
    from pflbench.export.flower import export

    spec = _spec(method, task, model, channel, codec, clients, clients_per_round, rounds, local_steps,
                 batch_size, lr, seed, eval_every, opt, device, scheduler=scheduler, secagg=secagg)
    for path in export(spec, out, force):
        print(path)
    _err(f"run it: cd {out} && python -m pflbench_app.simulate  (Flower's simulation, one SuperNode per client; "
         f"needs pflbench[flower])")
