"""Sweeps: a grid of runs from a suite file (``pflbench sweep SUITE.yaml``).

A suite file is YAML::

    methods: [fedavg-lora, pftt]      # or "all": every registered method that loads
    tasks: [synth-world]
    channels: [ideal, lte-cell-edge]
    codecs: [fp32]
    models: [tiny]                    # omitted: each task card's model
    seeds: 0-2                        # a list, or a range text as for --seeds
    rounds: 2                         # any run setting, named like its flag
    clients_per_round: 2
    overrides:                        # per-entry changes, applied after the settings above
      tasks:
        synth-align: {lr: 0.003}
      methods:
        pfit: {opt: {mu: 0.1}}        # method options, as --opt

Runs are the product of the lists. Each is an ordinary run into the results folder: a finished
one is kept (not run again), an interrupted one resumes from its checkpoint, and a run is
written by one process at a time (its folder's lock), so a sweep stopped at any moment and
started again runs nothing twice and loses nothing.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

from pflbench import registry
from pflbench.config import MAX_SEEDS, PRECISIONS, RunSpec, parse_dp, parse_seeds
from pflbench.errors import UserError, shown
from pflbench.federation.engine import run
from pflbench.federation.resolve import device_of, resolve_components, resolve_spec
from pflbench.results.record import CHECKPOINT, load_records, finished_record, partial_dir
from pflbench.yamlcards import read_card

Positive = Annotated[StrictInt, Field(gt=0)]
Scalar = Union[StrictStr, StrictInt, StrictFloat, StrictBool]


class Settings(BaseModel):
    """Run settings a suite (or one of its overrides) may set, named like their flags."""

    model_config = ConfigDict(extra="forbid")
    clients: Optional[Positive] = None
    clients_per_round: Optional[Positive] = None
    rounds: Optional[Positive] = None
    local_steps: Optional[Positive] = None
    batch_size: Optional[Positive] = None
    lr: Optional[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = None
    eval_every: Optional[Annotated[StrictInt, Field(ge=0)]] = None
    device: Optional[StrictStr] = None
    parallel_clients: Optional[Union[StrictInt, StrictStr]] = None  # a positive integer or auto

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, value):
        if isinstance(value, bool):  # YAML's true would be read as a rate of 1.0
            raise ValueError("must be a number, not true or false")
        return value

    @field_validator("parallel_clients")
    @classmethod
    def _parallel(cls, value):
        if value is not None and value != "auto" and (not isinstance(value, int) or value < 1):
            raise ValueError("must be a positive integer or auto")
        return value
    precision: Optional[Literal[PRECISIONS]] = None
    membership: Optional[StrictBool] = None  # --membership: the membership-inference attack at every evaluation
    secagg: Optional[StrictBool] = None  # --secagg: pairwise-masked secure aggregation
    opt: dict[StrictStr, Scalar] = {}  # method options


class Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: dict[StrictStr, Settings] = {}
    models: dict[StrictStr, Settings] = {}
    methods: dict[StrictStr, Settings] = {}


class Exclude(BaseModel):
    """Runs of the grid left out: those matching every axis named (a value or a list each)."""

    model_config = ConfigDict(extra="forbid")
    methods: Optional[Union[StrictStr, list[StrictStr]]] = None
    tasks: Optional[Union[StrictStr, list[StrictStr]]] = None
    models: Optional[Union[StrictStr, list[StrictStr]]] = None
    seeds: Optional[Union[StrictStr, StrictInt, list[Annotated[StrictInt, Field(ge=0)]]]] = None

    def matches(self, method: str, task: str, model: str | None, seed: int) -> bool:
        named = [(v if isinstance(v, list) else [v], x) for v, x in ((self.methods, method), (self.tasks, task),
                                                                      (self.models, model)) if v is not None]
        if self.seeds is not None:
            named.append((seeds_of(self.seeds), seed))
        return bool(named) and all(x in values for values, x in named)


class Suite(Settings):
    methods: Union[Literal["all"], list[StrictStr]] = "all"
    tasks: list[StrictStr] = Field(default_factory=lambda: [RunSpec.task], min_length=1)
    channels: list[StrictStr] = Field(default_factory=lambda: ["ideal"], min_length=1)
    schedulers: list[StrictStr] = Field(default_factory=lambda: ["random"], min_length=1)
    codecs: list[StrictStr] = Field(default_factory=lambda: ["fp32"], min_length=1)
    # --dp settings (clip=C,noise=Z[,mode=...][,delta=D]); "none": without differential privacy
    dps: list[StrictStr] = Field(default_factory=lambda: ["none"], min_length=1)
    models: list[Optional[StrictStr]] = Field(default_factory=lambda: [None], min_length=1)
    seeds: Union[StrictStr, StrictInt, list[Annotated[StrictInt, Field(ge=0)]]] = [0]
    overrides: Overrides = Overrides()
    # combinations of the grid not to run, e.g. [{methods: fedavg-full, tasks: shakespeare-roles}]
    exclude: list[Exclude] = []


def load_suite(path: Path) -> Suite:
    data, where = read_card(Path(path), "suite")
    if not isinstance(data, dict):
        raise UserError(f"{where}: a suite file is a mapping of settings (methods:, tasks:, seeds:, ...)")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(shown(x) for x in err["loc"]) or "(top level)"
        raise UserError(f"{where}: {field}: {err['msg']} (got {repr(err.get('input'))[:60]})") from None


def seeds_of(value: Union[str, int, list[int]]) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        if len(value) > MAX_SEEDS:
            raise UserError(f"seeds: more than {MAX_SEEDS:,} seeds")
        return sorted(set(value))

    return parse_seeds(value)


def method_names(suite: Suite, warn: Callable[[str], None] | None = None) -> list[str]:
    return registry.methods.usable(None if suite.methods == "all" else list(suite.methods), warn)


SETTING_KEYS = ("clients", "clients_per_round", "rounds", "local_steps", "batch_size", "lr", "eval_every", "device",
                "parallel_clients", "precision", "membership", "secagg")


def expand(suite: Suite, warn: Callable[[str], None] | None = None) -> list[RunSpec]:
    """Every run of the suite, resolved (flags, then the task card's defaults, then the
    method's), in order task, model, channel, scheduler, codec, dp, seed, method."""
    for name in suite.overrides.tasks:
        if name not in suite.tasks:
            raise UserError(f"suite overrides task {name!r}, which is not in its tasks ({', '.join(suite.tasks)})")
    for name in suite.overrides.models:
        if name not in suite.models:
            raise UserError(f"suite overrides model {name!r}, which is not in its models ({', '.join(map(str, suite.models))})")
    methods = method_names(suite, warn)
    for name in suite.overrides.methods:
        if name not in methods:
            raise UserError(f"suite overrides method {name!r}, which is not in its methods ({', '.join(methods)})")
    specs = []
    # each axis once (a name listed twice would race itself under --jobs)
    grid = [list(dict.fromkeys(axis)) for axis in (suite.tasks, suite.models, suite.channels, suite.schedulers, suite.codecs,
                                                    suite.dps)]
    grid += [seeds_of(suite.seeds), list(dict.fromkeys(methods))]
    size = math.prod(len(axis) for axis in grid)
    if size > MAX_RUNS:  # said before the grid is built (a million specs take minutes to resolve)
        raise UserError(f"the suite is a grid of {size:,} runs; at most {MAX_RUNS:,}: split it into several suites")
    for dp in suite.dps:
        if dp != "none":
            parse_dp(dp)  # one line for a bad entry, before any spec is resolved
    for entry in suite.exclude:
        for axis, values, known in (("methods", entry.methods, methods), ("tasks", entry.tasks, suite.tasks),
                                    ("models", entry.models, suite.models)):
            unknown = [v for v in (values if isinstance(values, list) else [values]) if values is not None and v not in known]
            if unknown:
                raise UserError(f"suite excludes {axis[:-1]} {unknown[0]!r}, which is not in its {axis} "
                                f"({', '.join(map(str, known))})")
    for task, model, channel, scheduler, codec, dp, seed, method in itertools.product(*grid):
        if any(entry.matches(method, task, model, seed) for entry in suite.exclude):
            continue
        given: dict[str, Any] = {k: getattr(suite, k) for k in SETTING_KEYS}
        opts = {k: str(v) for k, v in suite.opt.items()}
        # the most specific wins: task, then model, then method
        for layer in (suite.overrides.tasks.get(task), suite.overrides.models.get(model or ""),
                      suite.overrides.methods.get(method)):
            if layer is not None:
                given.update({k: getattr(layer, k) for k in SETTING_KEYS if getattr(layer, k) is not None})
                opts.update({k: str(v) for k, v in layer.opt.items()})
        if given["eval_every"] is None:
            given["eval_every"] = RunSpec.eval_every
        given["device"] = given["device"] or "cpu"
        specs.append(resolve_spec(method=method, task=task, model=model, channel=channel, scheduler=scheduler, codec=codec, seed=seed,
                                  method_options=opts, dp=None if dp == "none" else dp, **given))
    _check_components(specs)
    return specs


MAX_RUNS = 20_000


def _check_components(specs: list[RunSpec]) -> None:
    """Each distinct channel, codec, model, device and method option of the grid, resolved
    now (cheaply, nothing loads): a typo fails the plan and --dry-run, not the run that
    reaches it an hour later."""

    seen: set[tuple] = set()
    for spec in specs:
        key = (spec.method, tuple(spec.method_options.items()), spec.channel, spec.scheduler, spec.codec, spec.model, spec.device)
        if key not in seen:
            seen.add(key)
            resolve_components(spec)
            registry.models.get(spec.model)
            device_of(spec.device)


@dataclass(frozen=True)
class Planned:
    spec: RunSpec
    status: str  # done | partial | todo
    estimate_s: float | None  # from earlier runs in the results folder; None: nothing to go by


def _work(spec: dict[str, Any]) -> float:
    return spec["rounds"] * spec["clients_per_round"] * spec["local_steps"]


def plan(specs: list[RunSpec], results_dir: Path) -> list[Planned]:
    """Each run's status in ``results_dir`` and its estimated time: the wall time per unit of
    work (rounds x clients per round x local steps) of earlier runs of the same task, method,
    model and device, else of the same task and model, times this run's work."""

    rates: dict[tuple, list[float]] = {}
    if Path(results_dir).is_dir():
        for rec in load_records(results_dir):
            s = rec["spec"]
            try:  # a record without timing or with a zero count says nothing about speed
                rate = float(rec["summary"]["wall_s"]) / _work(s)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                continue
            if not 0 <= rate < float("inf"):
                continue
            rates.setdefault((s["task"], s["method"], s["model"], s.get("device", "cpu")), []).append(rate)
            rates.setdefault((s["task"], s["model"]), []).append(rate)
    out = []
    for spec in specs:
        if (Path(results_dir) / spec.run_id / "record.json").exists():
            status = "done"
        elif (partial_dir(results_dir, spec.run_id) / CHECKPOINT).exists():
            status = "partial"
        else:
            status = "todo"
        known = rates.get((spec.task, spec.method, spec.model, spec.device)) or rates.get((spec.task, spec.model))
        est = (sum(known) / len(known)) * _work(spec.to_dict()) if known else None
        out.append(Planned(spec, status, est))
    return out


def run_one(spec_dict: dict[str, Any], results_dir: str, threads: int | None = None) -> dict[str, Any]:
    """One run in this process (or a worker's): its run id, score and wall time. A finished
    run is read back, not run again."""
    if threads:
        import torch

        torch.set_num_threads(threads)

    spec = RunSpec(**spec_dict)
    done = finished_record(results_dir, spec.run_id)
    record = done if done is not None else run(spec, results_dir)
    return {"run_id": spec.run_id, "kept": done is not None, "score": record["summary"]["score"],
            "wall_s": record["summary"]["wall_s"]}


def execute(planned: list[Planned], results_dir: Path, jobs: int = 1,
            on_done: Callable[[Planned, dict[str, Any]], None] | None = None,
            backend: str = "local", ray_address: str | None = None) -> list[dict[str, Any]]:
    """Run every planned run not yet done; ``jobs`` processes at once (each with its share of
    the CPU threads), or with ``backend`` ray as Ray tasks (``on_ray``). ``on_done(planned,
    result)`` is called as each finishes."""
    results = []
    todo = [p for p in planned if p.status != "done"]
    for p in planned:
        if p.status == "done":
            result = run_one(p.spec.to_dict(), str(results_dir))
            results.append(result)
            if on_done:
                on_done(p, result)
    if backend == "ray":
        return results + on_ray(todo, results_dir, jobs, on_done, ray_address)
    if jobs <= 1:
        for p in todo:
            result = run_one(p.spec.to_dict(), str(results_dir))
            results.append(result)
            if on_done:
                on_done(p, result)
        return results
    import concurrent.futures as cf
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(run_one, p.spec.to_dict(), str(results_dir), threads): p for p in todo}
        for fut in cf.as_completed(futures):
            result = fut.result()
            results.append(result)
            if on_done:
                on_done(futures[fut], result)
    except BaseException:
        # Ctrl-C, SIGTERM or a failed run: stop now. Queued runs are dropped and the workers
        # killed (their finished rounds are checkpointed; the same command resumes them),
        # rather than the pool's shutdown running every queued run first.
        pool.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            child.kill()
        raise
    pool.shutdown()
    return results


def on_ray(todo: list[Planned], results_dir: Path, jobs: int, on_done, address: str | None = None) -> list[dict[str, Any]]:
    """Each run a Ray task of one CPU (one torch thread) on the cluster at ``address`` (else a
    Ray started here with ``jobs`` CPUs): the cluster's free CPUs decide how many run at once.
    Every node writes into ``results_dir``, so on several machines it must be a folder they
    share (NFS, a mounted bucket). A task whose worker dies is retried (``RAY_RETRIES``) and
    resumes from its run's checkpoint; stopped, the sweep cancels its tasks, and the same command
    resumes as a local sweep does."""
    from pflbench.errors import UserError
    from pflbench.federation.backends import RAY_RETRIES, last_line, ray_init

    ray = ray_init(address, jobs)
    task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(run_one)
    where = str(Path(results_dir).resolve())
    refs = {task.remote(p.spec.to_dict(), where, 1): p for p in todo}
    pending, results = list(refs), []
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the run's own error, or its worker died too often
                    raise UserError(f"run {refs[ref].spec.run_id} ({describe(refs[ref].spec)}) failed on Ray: "
                                    f"{last_line(exc)}") from None
                results.append(result)
                if on_done:
                    on_done(refs[ref], result)
    except BaseException:  # Ctrl-C or a failed run: the other tasks stop now (their rounds are checkpointed)
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return results


def _die_with_parent(parent: int) -> None:
    """A sweep worker dies with the sweep, even with a ``kill -9`` of it (Linux: the kernel
    signals it when its parent exits); elsewhere it notices at its next run."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the sweep already ended before the line above
        os._exit(1)


def describe(spec: RunSpec) -> str:
    opts = ",".join(f"{k}={v}" for k, v in spec.method_options.items())
    extra = (f" {spec.precision}" if spec.precision != "fp32" else "") + (" random init" if spec.init == "random" else "")
    extra += f" dp[noise={spec.dp['noise']:g},{spec.dp['mode']}]" if spec.dp else ""
    channel = spec.channel + (f" {spec.scheduler}" if spec.scheduler != "random" else "")
    return f"{spec.task} {spec.method}{'[' + opts + ']' if opts else ''} {channel} {spec.codec} {spec.model}{extra} seed {spec.seed}"
