"""The ``pflbench`` command line. The only module that prints to the terminal.

Results go to standard output; progress and errors to standard error. A mistake the user
can fix (``UserError``, a bad flag) is one line on standard error and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from tabulate import tabulate

from pflbench import registry
from pflbench.config import RunSpec, parse_options, parse_seeds
from pflbench.errors import UserError
from pflbench.registry import describe

app = typer.Typer(
    help="Personalized federated fine-tuning of language models over wireless uplinks.",
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
)

DEFAULT = RunSpec()
DEFAULT_RESULTS = Path("results")
REFERENCE_PAYLOAD = 67_000_000 // 8  # 67 Mbit: the payload the channel presets' sanity bands refer to
_payload = typer.Option(None, help="bytes each client uploads (default: the --method's payload, else 67 Mbit)")
_pmethod = typer.Option(None, "--method", help="size the payload as this method's upload (with --model, --codec)")
_pmodel = typer.Option(DEFAULT.model, "--model", help="with --method: the model")
_pcodec = typer.Option(DEFAULT.codec, "--codec", help="with --method: the codec")


def _payload_size(payload_bytes: Optional[int], method: Optional[str], model: str, codec: str) -> int:
    """--payload-bytes if given; else the spec's payload (--method on --model under --codec)."""
    if payload_bytes is not None:
        if payload_bytes <= 0:
            raise UserError("--payload-bytes must be positive")
        return payload_bytes
    if method is None:
        return REFERENCE_PAYLOAD
    from pflbench.federation.engine import payload_bytes as measure

    size = measure(method, model, codec)
    if size == 0:
        raise UserError(f"method {method!r} uploads nothing: there is no payload to send over a channel")
    return size


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Progress:
    """Renders model-building progress (tqdm) and one line per finished round, on stderr."""

    def __init__(self, label: str, rounds: int, quiet: bool = False):
        self.label, self.rounds, self.quiet = label, rounds, quiet
        self._bar = None

    def build(self, what: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, file=sys.stderr, leave=False)
        self._bar.n = done
        self._bar.refresh()
        if done >= total:
            self._bar.close()
            self._bar = None

    def round(self, rec: dict[str, Any]) -> None:
        if self.quiet:
            return
        from pflbench.results.table import human_bytes

        loss = "-" if rec["train_loss"] is None else f"{rec['train_loss']:.3f}"
        reward = f"  reward {rec['train_reward']:.1f}" if rec.get("train_reward") is not None else ""
        line = (
            f"[{self.label}] round {rec['round']}/{self.rounds}  loss {loss}{reward}  "
            f"uplink {human_bytes(rec['uplink_bytes'])}  delivered {len(rec['delivered'])}/{len(rec['links'])}"
        )
        if rec["eval"] is not None:
            line += f"  score {rec['eval']['score']:.2f}  gain {rec['eval']['personalization_gain']:+.2f}"
        _err(line)


def _spec(method, task, model, channel, codec, clients, clients_per_round, rounds, local_steps,
          batch_size, lr, seed, eval_every, opt, device, parallel_clients=None, precision=None, init=None) -> RunSpec:
    """The resolved spec: a flag given wins, then the task card's defaults, then the method's
    learning rate, then the suite's defaults (None: the flag was not given)."""
    from pflbench.federation.resolve import resolve_spec  # deferred: imports torch, which --help and list do not need

    return resolve_spec(
        method=method, task=task, model=model, channel=channel, codec=codec, clients=clients,
        clients_per_round=clients_per_round, rounds=rounds, local_steps=local_steps, batch_size=batch_size,
        lr=lr, seed=seed, eval_every=eval_every, method_options=parse_options(opt or []), device=device,
        parallel_clients=parallel_clients, precision=precision, init=init,
    )


def _execute(spec: RunSpec, results_dir: Path, quiet: bool, label: str | None = None,
             force: bool = False, backend: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a spec into RESULTS_DIR: a finished run is kept and returned (``force``: run it
    again; the old record is replaced only when the new run finishes); an interrupted one
    resumes from its checkpoint."""
    from pflbench.federation.engine import run
    from pflbench.results.record import CHECKPOINT, partial_dir, read_record

    label = label or spec.method
    done = read_record(results_dir / spec.run_id)
    if done is not None and not force:
        _err(f"[{label}] finished earlier, kept: {results_dir / spec.run_id / 'record.json'} (--force runs it again)")
        return done
    partial = partial_dir(results_dir, spec.run_id)
    if (partial / CHECKPOINT).exists():
        _err(f"[{label}] resuming the interrupted run in {partial} from its last finished round")
    progress = _Progress(label, spec.rounds, quiet)
    try:
        return run(spec, results_dir, progress=progress.build, on_round=progress.round, **(backend or {}))
    except KeyboardInterrupt:
        _err(f"interrupted: finished rounds are kept in {partial}; the same command resumes the run")
        raise typer.Exit(130)


# Options shared by `run` and `bench` ------------------------------------------------------
_task = typer.Option(DEFAULT.task, help="registered task name, or a path to a task card (.yaml)")
_model = typer.Option(None, help=f"registered model, Hugging Face id, or local path (default: the task card's, else {DEFAULT.model})")
_channel = typer.Option(DEFAULT.channel, help="channel preset (see `pflbench list channels`), or a path to a channel card")
_codec = typer.Option(DEFAULT.codec, help="uplink payload codec: fp32, fp16, bf16, int8 or topk:F (0 < F <= 1)")
_clients = typer.Option(None, help=f"number of clients (default: the task card's, else {DEFAULT.clients})")
_cpr = typer.Option(None, help=f"clients sampled each round (default: the task card's, else {DEFAULT.clients_per_round})")
_rounds = typer.Option(None, help=f"federated rounds (default: the task card's, else {DEFAULT.rounds})")
_steps = typer.Option(None, help=f"local optimizer steps per client-round (default: the task card's, else {DEFAULT.local_steps})")
_batch = typer.Option(None, help=f"examples per local step (default: the task card's, else {DEFAULT.batch_size})")
_lr = typer.Option(None, help="learning rate (default: the task card's, else the method's own)")
_seed = typer.Option(DEFAULT.seed, help="seed for every random draw")
_eval_every = typer.Option(DEFAULT.eval_every, help="evaluate every N rounds (0: after the last round only)")
_opt = typer.Option(None, "--opt", "-o", help="method option KEY=VALUE (repeatable); see `pflbench list methods`")
_results = typer.Option(DEFAULT_RESULTS, help="where run records are written")
_device = typer.Option("cpu", help="cpu, cuda, cuda:N or auto")
_precision = typer.Option("fp32", help="fp32, or bf16 where the hardware has bf16 instructions (the frozen base in bf16 under autocast, trained tensors in fp32); part of the run id (docs/models.md, Precision)")
_init = typer.Option("pretrained", help="pretrained, or random: the model's architecture with random weights, for timing a model's size where its weights are not at hand (such runs are left out of tables)")
_data_dir = typer.Option(None, help="local copies of hub datasets: DIR/TASK.jsonl (or .json/.csv/.parquet); also PFLBENCH_DATA_DIR")


def _use_data_dir(data_dir: Optional[Path]) -> None:
    if data_dir is not None:
        if not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir} is not a directory")
        os.environ["PFLBENCH_DATA_DIR"] = str(data_dir)
_backend = typer.Option("local", help="where sampled clients train: local (this process) or ray (parallel Ray workers; pflbench[ray]); the record does not change")
_workers = typer.Option(None, help="--backend ray: parallel workers, each holding one base model (default 2)")
_ray_address = typer.Option(None, help="--backend ray: address of a running Ray cluster (default: start Ray on this machine)")
_parallel = typer.Option("auto", help="train up to K sampled clients in one pass over the base model where the method allows (LoRA/adapter methods with the default update); auto: as many as fit an activation-memory estimate (1 on --backend ray); 1: one after another. Records agree with 1 within a floating-point tolerance, and K is part of the run id (docs/performance.md, Batched clients)")


def _backend_args(backend: str, workers: Optional[int], ray_address: Optional[str], parallel_clients: str = "auto") -> tuple[dict[str, Any], int | str]:
    """The backend's arguments, and the spec's ``parallel_clients`` (``auto`` is 1 on a
    backend that trains one client at a time)."""
    from pflbench.config import parse_parallel
    from pflbench.federation.backends import check_backend

    parallel = parse_parallel(parallel_clients)
    if backend != "local" and parallel == "auto":
        parallel = 1
    check_backend(backend, workers, parallel)
    if backend == "local" and (workers is not None or ray_address is not None):
        raise UserError("--workers and --ray-address go with --backend ray")
    return {"backend": backend, "workers": workers, "ray_address": ray_address}, parallel


_json = typer.Option(False, "--json", help="print the record(s) as JSON on stdout, nothing else")
_force = typer.Option(False, "--force", help="run again a spec whose record is already in RESULTS_DIR (replaced when the new run finishes)")


@app.command()
def run(
    method: str = typer.Option(DEFAULT.method, help="method name (see `pflbench list methods`)"),
    task: str = _task, model: Optional[str] = _model, channel: str = _channel, codec: str = _codec,
    clients: Optional[int] = _clients, clients_per_round: Optional[int] = _cpr, rounds: Optional[int] = _rounds,
    local_steps: Optional[int] = _steps, batch_size: Optional[int] = _batch, lr: Optional[float] = _lr, seed: int = _seed,
    eval_every: int = _eval_every, opt: Optional[list[str]] = _opt, results_dir: Path = _results,
    device: str = _device, data_dir: Optional[Path] = _data_dir, as_json: bool = _json, force: bool = _force,
    backend: str = _backend, workers: Optional[int] = _workers, ray_address: Optional[str] = _ray_address,
    parallel_clients: str = _parallel, precision: str = _precision, init: str = _init,
) -> None:
    """Run one federated experiment and print its summary. A spec already finished in
    RESULTS_DIR is not run again (--force does); an interrupted one resumes."""
    from pflbench.results.record import dumps

    _use_data_dir(data_dir)
    where, parallel = _backend_args(backend, workers, ray_address, parallel_clients)
    spec = _spec(method, task, model, channel, codec, clients, clients_per_round, rounds, local_steps,
                 batch_size, lr, seed, eval_every, opt, device, parallel, precision, init)
    record = _execute(spec, results_dir, quiet=False, force=force, backend=where)
    if as_json:
        print(dumps(record, sort_keys=True))
        return
    from pflbench.results.table import render

    print(render([record]))
    _err(f"record: {results_dir / record['run_id'] / 'record.json'}")


def _bench_options(pairs: list[str], names: list[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` goes to every method that declares KEY; ``METHOD:KEY=VALUE`` to that one."""
    import dataclasses

    out: dict[str, list[str]] = {n: [] for n in names}
    for pair in pairs:
        target, colon, rest = pair.partition(":") if ":" in pair.split("=", 1)[0] else ("", "", pair)
        if colon:
            if target not in out:
                raise UserError(f"--opt {pair!r}: method {target!r} is not among those benchmarked ({', '.join(names)})")
            out[target].append(rest)
            continue
        key = parse_options([pair]).popitem()[0]
        takers = [n for n in names if key in {f.name for f in dataclasses.fields(registry.methods.get(n).Options)}]
        if not takers:
            raise UserError(f"--opt {pair!r}: no benchmarked method has an option {key!r} (see `pflbench list methods`)")
        for n in takers:
            out[n].append(pair)
    return out


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
    task: str = _task, model: Optional[str] = _model, channel: str = _channel, codec: str = _codec,
    clients: Optional[int] = _clients, clients_per_round: Optional[int] = _cpr, rounds: Optional[int] = _rounds,
    local_steps: Optional[int] = _steps, batch_size: Optional[int] = _batch, lr: Optional[float] = _lr,
    seeds: str = typer.Option("0", help="seeds: integers and ranges, e.g. 0-4 or 0,2,5 (a table needs several)"),
    eval_every: int = _eval_every,
    opt: Optional[list[str]] = typer.Option(None, "--opt", "-o", help="KEY=VALUE for every method that has KEY, or METHOD:KEY=VALUE (repeatable)"),
    results_dir: Path = _results, device: str = _device, data_dir: Optional[Path] = _data_dir, as_json: bool = _json,
    force: bool = _force,
    backend: str = _backend, workers: Optional[int] = _workers, ray_address: Optional[str] = _ray_address,
    parallel_clients: str = _parallel, precision: str = _precision,
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
    options = _bench_options(opt or [], names)
    specs = [
        _spec(name, task, model, channel, codec, clients, clients_per_round, rounds, local_steps, batch_size,
              lr, seed, eval_every, options[name], device, parallel, precision)
        for seed in parse_seeds(seeds) for name in names
    ]
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
) -> None:
    """Run every combination of a suite file into RESULTS_DIR, then write
    RESULTS_DIR/leaderboard.md. Finished runs are kept, interrupted ones resume: stopped at any
    moment and started again, a sweep runs nothing twice and loses nothing."""
    from pflbench.orchestration import sweep as sw

    _use_data_dir(data_dir)
    if jobs < 1:
        raise UserError("--jobs must be at least 1")
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
        sw.execute(planned, results_dir, jobs=jobs, on_done=done)
    except KeyboardInterrupt:
        _err(f"interrupted: finished runs are kept, finished rounds of the others in {results_dir}; the same command goes on")
        raise typer.Exit(130)
    finally:
        bar.close()
    print(_write_leaderboard(results_dir))


@app.command()
def table(
    results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="folder holding run records"),
    fmt: str = typer.Option("github", "--format", help="csv or json (the numbers behind the tables, one row per method and setting), or any tabulate format: github, plain, latex, ..."),
    rewards_plot: Optional[Path] = typer.Option(None, help="reward tasks: draw each client's helpfulness against its harmlessness, coloured by its weight, to this PNG file"),
    across: bool = typer.Option(False, "--across-models", help="each comparison (a method minus local-only or fedavg-lora, paired over seeds) on each model side by side: which claims survive a change of model"),
    across_precision: bool = typer.Option(False, "--across-precisions", help="the same, fp32 beside bf16"),
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
    if across or across_precision:
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


export_app = typer.Typer(help="Export a run to run elsewhere.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("flower")
def export_flower(
    out: Path = typer.Option(..., "--out", help="folder to write the Flower app into"),
    method: str = typer.Option(DEFAULT.method, help="method name (see `pflbench list methods`)"),
    task: str = _task, model: Optional[str] = _model, channel: str = _channel, codec: str = _codec,
    clients: Optional[int] = _clients, clients_per_round: Optional[int] = _cpr, rounds: Optional[int] = _rounds,
    local_steps: Optional[int] = _steps, batch_size: Optional[int] = _batch, lr: Optional[float] = _lr, seed: int = _seed,
    eval_every: int = _eval_every, opt: Optional[list[str]] = _opt, device: str = _device,
    force: bool = typer.Option(False, "--force", help="overwrite files in --out that are not this app's (your own pyproject.toml)"),
) -> None:
    """Write a Flower app (ServerApp and ClientApp, flwr >= 1.21) that runs this spec: the same
    method, codec, channel and seeds, with each client's private state kept on its node. A
    file of yours in --out is never overwritten without --force."""
    from pflbench.federation.flower import export

    spec = _spec(method, task, model, channel, codec, clients, clients_per_round, rounds, local_steps,
                 batch_size, lr, seed, eval_every, opt, device)
    for path in export(spec, out, force):
        print(path)
    _err(f"run it: cd {out} && python -m pflbench_app.simulate  (Flower's simulation, one SuperNode per client; "
         f"needs pflbench[flower])")


channel_app = typer.Typer(help="Inspect channel presets and cards.", no_args_is_help=True)
app.add_typer(channel_app, name="channel")


@channel_app.command("show")
def channel_show(
    name: str = typer.Argument(..., help="preset name, or a path to a channel card (.yaml)"),
    payload_bytes: Optional[int] = _payload, method: Optional[str] = _pmethod, model: str = _pmodel, codec: str = _pcodec,
    clients: int = typer.Option(8, help="clients sharing a round"),
    rounds: int = typer.Option(500, help="simulated rounds (placements and fading draws)"),
    plot: Optional[Path] = typer.Option(None, help="draw the distributions to this PNG file"),
    as_json: bool = _json,
) -> None:
    """Print a channel's parameters and the distribution of rate, airtime, energy and delivery."""
    import dataclasses

    from pflbench.channel.base import link_statistics
    from pflbench.channel.cards import resolve_channel

    if clients <= 0 or rounds <= 0:
        raise UserError("--clients and --rounds must be positive")
    channel = resolve_channel(name)
    payload_bytes = _payload_size(payload_bytes, method, model, codec)
    sim = channel.simulate(payload_bytes, clients, rounds=rounds)
    params = dataclasses.asdict(channel.p) if hasattr(channel, "p") else {"name": channel.name}
    stats = link_statistics(sim)
    if as_json:
        print(json.dumps({"name": channel.name, "card": getattr(channel, "card", None), "parameters": params, "stats": stats}, default=str))
    else:
        print(f"{channel.name}: {channel.description}")
        if getattr(channel, "card", None):
            print(f"card: {channel.card}  (copy it, edit it, pass --channel your-card.yaml)")
        print(tabulate([[k, v] for k, v in params.items() if k not in ("name", "description")], tablefmt="simple"))
        print(f"\n{payload_bytes} bytes per client, {clients} clients a round, {rounds * clients} client-rounds:")
        print(tabulate([[k, *(f"{x:.4g}" for x in v.values())] for k, v in stats.items() if "delivery" not in k],
                       headers=["", "p10", "median", "p90"], tablefmt="simple"))
        d = stats["delivery probability"]
        print(f"delivery probability: mean {d['mean']:.3f}, p10 {d['p10']:.3f}")
    if plot is not None:
        from pflbench.results.plots import channel_histograms

        channel_histograms(channel.name, sim, plot)
        _err(f"plot: {plot}")


task_app = typer.Typer(help="Inspect task cards and their partitions.", no_args_is_help=True)
app.add_typer(task_app, name="task")


@task_app.command("show")
def task_show(
    name: str = typer.Argument(..., help="registered task, or a path to a task card (.yaml)"),
    clients: Optional[int] = typer.Option(None, help=f"number of clients (default: the card's, else {DEFAULT.clients})"),
    seed: int = typer.Option(DEFAULT.seed, help="partition seed"),
    plot: Optional[Path] = typer.Option(None, help="draw client sizes and label shares to this PNG file"),
    data_dir: Optional[Path] = _data_dir,
    as_json: bool = _json,
) -> None:
    """Print a task's card and its per-client sizes and label skew."""
    from pflbench.data.cards import resolve_task
    from pflbench.data.partition import label_key, partition, skew

    _use_data_dir(data_dir)
    task = resolve_task(name)
    clients = clients if clients is not None else task.defaults.get("clients", DEFAULT.clients)
    if clients <= 0:
        raise UserError("--clients must be a positive integer")
    groups = partition(task, task.records(), clients, seed)
    key = label_key(task)
    rows, shares = [], []
    values = sorted({str(r[key]) for _, g in groups for r in g}) if key else []
    for cname, g in groups:
        counts = [sum(str(r[key]) == v for r in g) for v in values]
        shares.append([c / len(g) for c in counts])
        row = {"client": cname, "examples": len(g), **({v: c for v, c in zip(values, counts)} if len(values) <= 12 else {})}
        if task.kind == "reward":  # each client's mixture over the card's reward models
            row.update({f"w_{role}": round(w, 3) for role, w in task.client_weights(cname, g, seed).items()})
        rows.append(row)
    # every template rendered on each client's first record, as a run renders it: a template
    # that does not fit the records fails here with the run's own line, before any model
    examples = {cname: task.render(g[0]) for cname, g in groups}
    summary = {"task": task.name, "kind": task.kind, "metric": task.metric, "partition": task.partition,
               "defaults": task.defaults, "clients": rows, "examples": examples,
               "label_key": key, "label_skew_tv": skew(shares) if key else None}
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        print(f"{task.name} ({task.kind}, metric {task.metric}): {task.description}")
        print(f"partition {json.dumps(task.partition)}, seed {seed}; card: {task.origin}")
        print(f"recommended budget (card defaults, used where no flag is given): {_defaults_text(task.defaults)}")
        if task.kind == "reward":
            print(f"reward models: {_defaults_text(task.rewards)}; each client's weights w_ROLE: mixture {json.dumps(task.mixture)}")
        print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]), tablefmt="simple"))
        if key:
            print(f"label skew ({key}): mean total-variation distance from the pooled label shares = {summary['label_skew_tv']:.3f}")
        print("one rendered example per client (its first record):")
        for cname, texts in examples.items():
            print(f"  {cname}: " + "; ".join(f"{k} {v!r}"[:160] for k, v in texts.items()))
    if plot is not None:
        from pflbench.results.plots import task_partition

        task_partition(task.name, groups, values, shares, plot)
        _err(f"plot: {plot}")


reward_app = typer.Typer(help="Inspect reward models.", no_args_is_help=True)
app.add_typer(reward_app, name="reward")


@reward_app.command("show")
def reward_show(
    name: str = typer.Argument(..., help="registered reward (see `pflbench list rewards`), or a Hugging Face id or path"),
    as_json: bool = _json,
) -> None:
    """Load a reward model (training and caching it on first use) and print what it is, and
    for a trained one its held-out preference accuracy."""
    from pflbench.rewards import resolve_reward

    info = resolve_reward(name, progress=_Progress(name, 0).build).info()
    if as_json:
        print(json.dumps(info, sort_keys=True))
    else:
        print(tabulate([[k, v] for k, v in info.items()], tablefmt="simple"))


class What(str, Enum):
    methods = "methods"
    tasks = "tasks"
    channels = "channels"
    models = "models"
    rewards = "rewards"


@app.command("list")
def list_(
    what: What = typer.Argument(..., help="methods, tasks, channels, models or rewards"),
    payload_bytes: Optional[int] = _payload, method: Optional[str] = _pmethod, model: str = _pmodel, codec: str = _pcodec,
    clients: int = typer.Option(8, help="channels: clients sharing a round"),
    as_json: bool = _json,
) -> None:
    """List what is registered, with a line of description each (channels: with their median
    rate and airtime for a payload)."""
    if clients <= 0:
        raise UserError("--clients must be positive")
    if what is What.channels:
        payload_bytes = _payload_size(payload_bytes, method, model, codec)
        _err(f"payload: {payload_bytes} bytes per client, {clients} clients a round")
    rows = []
    reg = getattr(registry, what.value)
    for name, entry in reg.entries().items():
        try:
            row = _describe(what, name, payload_bytes, clients)
        except UserError as exc:  # a broken plugin is listed as such; the rest still work
            row = {"name": name, "description": f"BROKEN: {exc}"}
        rows.append({"name": name, "package": entry.package, **row})  # where each entry comes from
    if as_json:
        print(json.dumps(rows, sort_keys=True))
    else:
        headers = list(dict.fromkeys(k for r in rows for k in r))
        print(tabulate([[r.get(h, "") for h in headers] for r in rows], headers=headers, tablefmt="simple"))


def _describe(what: What, name: str, payload_bytes: int, clients: int) -> dict[str, Any]:
    import dataclasses

    if what is What.channels:
        from pflbench.channel.base import link_statistics
        from pflbench.channel.cards import resolve_channel

        channel = resolve_channel(name)
        stats = link_statistics(channel.simulate(payload_bytes, clients, rounds=100))
        rate = stats["rate (Mbit/s)"]["p50"]
        return {
            "name": name,
            "median rate Mbit/s": "unlimited" if rate == float("inf") else round(rate, 2),
            "median airtime s": round(stats["airtime (s)"]["p50"], 3),
            "delivery": round(stats["delivery probability"]["mean"], 3),
            "description": describe(channel),
        }
    if what is What.tasks:
        from pflbench.data.cards import resolve_task
        from pflbench.data.sources import available_offline, describe_source

        t = resolve_task(name)
        return {"name": name, "kind": t.kind, "source": describe_source(t.source), "metric": t.metric,
                "offline": "yes" if available_offline(t.name, t.source) else "no (hub or --data-dir)",
                "defaults": _defaults_text(t.defaults), "description": t.description}
    obj = getattr(registry, what.value).get(name)
    row = {"name": name, "description": describe(obj)}
    if what is What.rewards:
        from pflbench.rewards import TrainedReward

        trained = isinstance(obj, type) and issubclass(obj, TrainedReward)
        row = {"name": name, "kind": "trained" if trained else "rule", "backbone": obj.backbone if trained else "-",
               "description": describe(obj)}
    if what is What.models:
        from pflbench.models import describe_size

        source = obj()
        row = {"name": name, "parameters": describe_size(source.parameters), "licence": source.licence,
               "offline": "yes" if source.offline() else f"no ({getattr(source, 'install', '') or 'see its docs'})",
               "description": describe(obj)}
    if what is What.methods:
        row["options"] = ", ".join(f"{f.name}={f.default if not isinstance(f.default, tuple) else ','.join(f.default) or 'auto'}"
                                   for f in dataclasses.fields(obj.Options))
    return row


def _defaults_text(defaults: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in defaults.items()) or "-"


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: finished rounds kept, a resume message


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Command-line usage errors under the installed typer: its own exception class (typer
    0.21 and later vendor click) or click's (earlier typer, which flwr pins)."""
    import click

    return tuple(t for t in (getattr(typer, "TyperException", None), click.ClickException) if t is not None)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="pflbench", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = 130
    except _usage_errors() as exc:  # usage errors: bad flag, bad value, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `pflbench`: the help, as usual
            _err(message)
        else:
            _err(f"error: {' '.join(message.split())}")
        code = 2
    except UserError as exc:
        _err(f"error: {exc}")
        code = 2
    except OSError as exc:  # what no command caught itself: a name too long, a folder not writable
        _err(f"error: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
