"""``run``, ``bench`` and ``sweep``: one experiment, methods x seeds, a suite file's grid."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from tabulate import tabulate

from pflbench import registry
from pflbench.config import parse_seeds
from pflbench.errors import UserError
from pflbench.cli.common import (
    app, DEFAULT, _err, _spec, _execute, _task, _model, _channel, _scheduler, _codec, _clients, _cpr,
    _rounds, _steps, _batch, _lr, _seed, _eval_every, _opt, _results, _device, _precision,
    _init, _data_dir, _use_data_dir, _backend, _workers, _ray_address, _parallel, _backend_args,
    _json, _json_only, _force, _method_options, _dp, _membership, _secagg,
)


# The suite's engine, orchestration and results are imported inside the commands: they load
# torch (and matplotlib), which `pflbench --help` and `pflbench list` do without.


@app.command()
def run(
    method: str = typer.Option(DEFAULT.method, help="method name (see `pflbench list methods`)"),
    task: str = _task, model: Optional[str] = _model, channel: str = _channel, scheduler: str = _scheduler, codec: str = _codec,
    clients: Optional[int] = _clients, clients_per_round: Optional[int] = _cpr, rounds: Optional[int] = _rounds,
    local_steps: Optional[int] = _steps, batch_size: Optional[int] = _batch, lr: Optional[float] = _lr, seed: int = _seed,
    eval_every: int = _eval_every, opt: Optional[list[str]] = _opt, results_dir: Path = _results,
    device: str = _device, data_dir: Optional[Path] = _data_dir, as_json: bool = _json, force: bool = _force,
    backend: str = _backend, workers: Optional[int] = _workers, ray_address: Optional[str] = _ray_address,
    parallel_clients: str = _parallel, precision: str = _precision, init: str = _init, dp: Optional[str] = _dp,
    membership: bool = _membership, secagg: bool = _secagg,
) -> None:
    """Run one federated experiment and print its summary. A spec already finished in
    RESULTS_DIR is not run again (--force does); an interrupted one resumes."""
    from pflbench.results.record import dumps

    _use_data_dir(data_dir)
    where, parallel = _backend_args(backend, workers, ray_address, parallel_clients)
    spec = _spec(method, task, model, channel, codec, clients, clients_per_round, rounds, local_steps,
                 batch_size, lr, seed, eval_every, opt, device, parallel, precision, init, scheduler=scheduler, dp=dp,
                 membership=membership, secagg=secagg)
    with _json_only(as_json):
        record = _execute(spec, results_dir, quiet=False, force=force, backend=where)
    if as_json:
        print(dumps(record, sort_keys=True))
        return
    from pflbench.results.table import render

    print(render([record]))
    _err(f"record: {results_dir / record['run_id'] / 'record.json'}")


def _write_leaderboard(results_dir: Path) -> str:
    """Write RESULTS_DIR/leaderboard.md, the table of every run there; return it."""
    from pflbench.results.record import load_records
    from pflbench.results.table import render

    everything = render(load_records(results_dir, warn=_err))
    try:
        (results_dir / "leaderboard.md").write_text(everything + "\n", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {results_dir / 'leaderboard.md'}: {exc.strerror or exc} (the runs themselves are kept)") from None
    _err(f"table of every run in {results_dir}: {results_dir / 'leaderboard.md'}")
    return everything


@app.command()
def bench(
    methods: Optional[str] = typer.Option(None, help="comma-separated methods (default: every registered method)"),
    task: str = _task, model: Optional[str] = _model, channel: str = _channel, scheduler: str = _scheduler, codec: str = _codec,
    clients: Optional[int] = _clients, clients_per_round: Optional[int] = _cpr, rounds: Optional[int] = _rounds,
    local_steps: Optional[int] = _steps, batch_size: Optional[int] = _batch, lr: Optional[float] = _lr,
    seeds: str = typer.Option("0", help="seeds: integers and ranges, e.g. 0-4 or 0,2,5 (a table needs several)"),
    eval_every: int = _eval_every,
    opt: Optional[list[str]] = typer.Option(None, "--opt", "-o", help="KEY=VALUE for every method that has KEY, or METHOD:KEY=VALUE (repeatable)"),
    results_dir: Path = _results, device: str = _device, data_dir: Optional[Path] = _data_dir, as_json: bool = _json,
    force: bool = _force,
    backend: str = _backend, workers: Optional[int] = _workers, ray_address: Optional[str] = _ray_address,
    parallel_clients: str = _parallel, precision: str = _precision, dp: Optional[str] = _dp,
    membership: bool = _membership, secagg: bool = _secagg,
) -> None:
    """Run several methods over several seeds on one setting; print their leaderboard (means
    and 95% intervals over seeds) and write RESULTS_DIR/leaderboard.md over every run there.
    A run whose record is already in RESULTS_DIR is not run again (--force does); an
    interrupted one resumes."""
    from pflbench.results.record import dumps
    from pflbench.results.table import render

    _use_data_dir(data_dir)
    where, parallel = _backend_args(backend, workers, ray_address, parallel_clients)
    # the named methods (a typo fails before hours of training), or every one that loads
    names = registry.methods.usable([m.strip() for m in methods.split(",") if m.strip()] if methods else None, warn=_err)
    options = _method_options(opt or [], names)
    specs = [
        _spec(name, task, model, channel, codec, clients, clients_per_round, rounds, local_steps, batch_size,
              lr, seed, eval_every, options[name], device, parallel, precision, scheduler=scheduler, dp=dp,
              membership=membership, secagg=secagg)
        for seed in parse_seeds(seeds) for name in names
    ]
    with _json_only(as_json):
        records = [_execute(spec, results_dir, quiet=False, label=f"{i}/{len(specs)} {spec.method} seed {spec.seed}",
                            force=force, backend=where) for i, spec in enumerate(specs, 1)]
    if as_json:
        print(dumps(records, sort_keys=True))
        return
    print(render(records))
    _write_leaderboard(results_dir)


@app.command()
def sweep(
    suite_file: Path = typer.Argument(..., help="suite file (YAML): lists of methods, tasks, channels, codecs, models, seeds; run settings; overrides"),
    results_dir: Path = _results,
    jobs: int = typer.Option(1, "--jobs", "-j", help="runs at once, each in its own process with its share of the CPU threads"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs (done, partial, to do) with estimated times; run nothing"),
    data_dir: Optional[Path] = _data_dir,
    backend: str = typer.Option("local", help="local: --jobs processes here; ray: each run a Ray task of one CPU (pflbench[ray]), on this machine with --jobs CPUs or on the cluster at --ray-address, whose nodes must share RESULTS_DIR"),
    ray_address: Optional[str] = _ray_address,
) -> None:
    """Run every combination of a suite file into RESULTS_DIR, then write
    RESULTS_DIR/leaderboard.md. Finished runs are kept, interrupted ones resume: stopped at any
    moment and started again, a sweep runs nothing twice and loses nothing."""
    from pflbench.federation.backends import check_backend
    from pflbench.orchestration import sweep as sw

    _use_data_dir(data_dir)
    if jobs < 1:
        raise UserError("--jobs must be at least 1")
    if ray_address is not None and backend != "ray":
        raise UserError("--ray-address goes with --backend ray")
    check_backend(backend, None, ray_address)
    suite = sw.load_suite(suite_file)
    planned = sw.plan(sw.expand(suite, warn=_err), results_dir)
    if not planned:
        raise UserError(f"{suite_file} describes no runs")
    known = [p.estimate_s for p in planned if p.status != "done" and p.estimate_s is not None]
    unknown = sum(p.status != "done" and p.estimate_s is None for p in planned)
    counts = {s: sum(p.status == s for p in planned) for s in ("done", "partial", "todo")}
    summary = (f"{len(planned)} runs: {counts['done']} done, {counts['partial']} interrupted (resume), {counts['todo']} to run; "
               f"estimated {sum(known) / 60:.1f} min of runs" + (f" plus {unknown} with nothing to estimate from" if unknown else "")
               + (f", over {jobs} jobs" if jobs > 1 else ""))
    if dry_run:
        print(tabulate([[i, sw.describe(p.spec), p.spec.run_id, p.status, "" if p.estimate_s is None else f"{p.estimate_s:.0f}"]
                        for i, p in enumerate(planned, 1)], headers=["#", "run", "run id", "status", "est. s"], tablefmt="simple"))
        print(summary)
        return
    _err(summary)
    from tqdm import tqdm

    bar = tqdm(total=len(planned), desc="sweep", unit="run", file=sys.stderr, dynamic_ncols=True)

    def done(p, result) -> None:
        how = "kept" if result["kept"] else f"{result['wall_s']:.0f} s"
        bar.write(f"[{sw.describe(p.spec)}] score {result['score']:.2f} ({how}) {result['run_id']}", file=sys.stderr)
        bar.update(1)

    try:
        sw.execute(planned, results_dir, jobs=jobs, on_done=done, backend=backend, ray_address=ray_address)
    except KeyboardInterrupt:
        _err(f"interrupted: finished runs are kept, finished rounds of the others in {results_dir}; the same command goes on")
        raise typer.Exit(130)
    finally:
        bar.close()
    print(_write_leaderboard(results_dir))
