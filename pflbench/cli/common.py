"""What every command shares: the Typer app, the options several commands take, progress
and error lines on standard error, building a run's spec and running it."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from pflbench.config import RunSpec, parse_options
from pflbench.errors import UserError



# The suite's engine, orchestration and results are imported inside the commands: they load
# torch (and matplotlib), which `pflbench --help` and `pflbench list` do without.


app = typer.Typer(
    help="Personalized federated fine-tuning of language models over wireless uplinks.",
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
)


DEFAULT = RunSpec()
DEFAULT_RESULTS = Path("results")
REFERENCE_PAYLOAD = 67_000_000 // 8  # 67 Mbit: the payload the channel presets' sanity bands refer to
_payload = typer.Option(None, help="bytes each client uploads (default: the --method's payload, else 67 Mbit)")
_pmethod = typer.Option(None, "--method", help="size the payload as this method's upload (with --model, --codec)")
_pmodel = typer.Option(DEFAULT.model, "--model", help="with --method: the model (any `budget show` reads: registered, shipped config, config.json, cached id)")
_pcodec = typer.Option(DEFAULT.codec, "--codec", help="with --method: the codec")


def _payload_size(payload_bytes: Optional[int], method: Optional[str], model: str, codec: str) -> int:
    """--payload-bytes if given; else the spec's payload (--method on --model under --codec),
    counted on the meta device as `budget show` does: no weights, so any architecture."""
    if payload_bytes is not None:
        if payload_bytes <= 0:
            raise UserError("--payload-bytes must be positive")
        return payload_bytes
    if method is None:
        return REFERENCE_PAYLOAD
    from pflbench.orchestration.budget import meta_payload

    size = meta_payload(model, method, codec).uplink_bytes
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
            f"uplink {human_bytes(rec['uplink_bytes'])}  downlink {human_bytes(rec['downlink_bytes'])}  delivered {len(rec['delivered'])}/{len(rec['links'])}"
        )
        if rec["eval"] is not None:
            line += f"  score {rec['eval']['score']:.2f}  gain {rec['eval']['personalization_gain']:+.2f}"
        _err(line)


def _spec(method, task, model, channel, codec, clients, clients_per_round, rounds, local_steps,
          batch_size, lr, seed, eval_every, opt, device, parallel_clients=None, precision=None, init=None,
          scheduler=None, dp=None, membership=None, secagg=None) -> RunSpec:
    """The resolved spec: a flag given wins, then the task card's defaults, then the method's
    learning rate, then the suite's defaults (None: the flag was not given)."""
    from pflbench.federation.resolve import resolve_spec  # deferred: imports torch, which --help and list do not need

    return resolve_spec(
        method=method, task=task, model=model, channel=channel, codec=codec, clients=clients,
        clients_per_round=clients_per_round, rounds=rounds, local_steps=local_steps, batch_size=batch_size,
        lr=lr, seed=seed, eval_every=eval_every, method_options=parse_options(opt or []), device=device,
        parallel_clients=parallel_clients, precision=precision, init=init, scheduler=scheduler, dp=dp,
        membership=membership or None, secagg=secagg or None,
    )


def _execute(spec: RunSpec, results_dir: Path, quiet: bool, label: str | None = None,
             force: bool = False, backend: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a spec into RESULTS_DIR: a finished run is kept and returned (``force``: run it
    again; the old record is replaced only when the new run finishes); an interrupted one
    resumes from its checkpoint."""
    from pflbench.federation.engine import run
    from pflbench.results.record import CHECKPOINT, finished_record, partial_dir

    label = label or spec.method
    done = finished_record(results_dir, spec.run_id)
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
_scheduler = typer.Option(DEFAULT.scheduler, help="who transmits each round (see `pflbench list schedulers`): random, "
                          "round-robin, best-channel, proportional-fair, age-based, deadline-aware")
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
_dp = typer.Option(None, help="client-level differential privacy on the uplink: clip=C,noise=Z[,mode=local|central][,delta=D]: each upload clipped to L2 norm C, Gaussian noise Z*C added by each client (local) or Z*C/K to the aggregate by the server (central); epsilon from dp-accounting at delta (default 1/clients) in every round and the summary (docs/privacy.md)")
_membership = typer.Option(False, "--membership", help="score a loss-threshold membership-inference attack at every evaluation: each client's own training examples against its held-out ones, on its deployed model and on the shared part alone; the AUC (0.5: nothing leaked) in the record and the tables (docs/privacy.md)")
_secagg = typer.Option(False, "--secagg", help="pairwise-masked secure aggregation (Bonawitz et al. 2017), simulated byte for byte: the server learns only the round's weighted sum; keys, encrypted shares and the dropped clients' mask recovery counted in the uplink and downlink (fp32 codec, digital channels; docs/privacy.md)")
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
_parallel = typer.Option("auto", help="train up to K sampled clients in one pass over the base model where the method allows (LoRA/adapter methods with the default update); auto: as many as fit an activation-memory estimate (on --backend ray: of each worker's share of the round); 1: one after another. Records agree with 1 within a floating-point tolerance, and K is part of the run id (docs/performance.md, Batched clients)")


def _backend_args(backend: str, workers: Optional[int], ray_address: Optional[str], parallel_clients: str = "auto") -> tuple[dict[str, Any], int | str]:
    """The backend's arguments, and the spec's ``parallel_clients``."""
    from pflbench.config import parse_parallel
    from pflbench.federation.backends import check_backend

    parallel = parse_parallel(parallel_clients)
    if backend == "local" and (workers is not None or ray_address is not None):
        raise UserError("--workers and --ray-address go with --backend ray")
    check_backend(backend, workers, ray_address)
    return {"backend": backend, "workers": workers, "ray_address": ray_address}, parallel


_json = typer.Option(False, "--json", help="print the record(s) as JSON on stdout, nothing else")


@contextlib.contextmanager
def _json_only(as_json: bool):
    """With --json, what libraries print on stdout while a run goes (Ray's driver prints its
    workers' errors there) goes to stderr: stdout holds the JSON alone."""
    if not as_json:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield
_force = typer.Option(False, "--force", help="run again a spec whose record is already in RESULTS_DIR (replaced when the new run finishes)")


def _method_options(pairs: list[str], names: list[str], doing: str = "benchmarked") -> dict[str, list[str]]:
    """``--opt`` of a command over several methods (bench, budget show): ``KEY=VALUE`` goes to
    every method that declares KEY; ``METHOD:KEY=VALUE`` to that one."""
    import dataclasses

    from pflbench import registry

    out: dict[str, list[str]] = {n: [] for n in names}
    for pair in pairs:
        target, colon, rest = pair.partition(":") if ":" in pair.split("=", 1)[0] else ("", "", pair)
        if colon:
            if target not in out:
                raise UserError(f"--opt {pair!r}: method {target!r} is not among those {doing} ({', '.join(names)})")
            out[target].append(rest)
            continue
        key = parse_options([pair]).popitem()[0]
        takers = [n for n in names if key in {f.name for f in dataclasses.fields(registry.methods.get(n).Options)}]
        if not takers:
            raise UserError(f"--opt {pair!r}: no {doing} method has an option {key!r} (see `pflbench list methods`)")
        for n in takers:
            out[n].append(pair)
    return out
