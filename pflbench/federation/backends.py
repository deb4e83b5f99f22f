"""Where the sampled clients' local updates run (``--backend``).

- ``local``: in this process, on the experiment's own model, ``parallel_clients`` at a time.
- ``ray``: in parallel Ray actors (``pflbench[ray]``), each training a contiguous share of the
  round's clients, ``parallel_clients`` at a time. Each actor resolves the same spec once,
  so it holds one base model with the method's adapters; a client's private tensors, state
  and codec memory travel with its ``ClientJob`` and come back in its ``ClientOutcome``; the
  server (this process) keeps the global state, the store, the channel and the evaluation.
  ``ray.init()`` starts Ray on this machine; ``--ray-address`` joins a running cluster. A
  worker that dies is restarted and its share trained again (``RAY_RETRIES``).

Both run ``federation.client.train_client`` and the outcome of a client depends only on its
job (its generator is seeded by (seed, round, client)), so a run's record is the same on
either backend, apart from timing, at the same torch thread count (with ``parallel_clients``
above 1, within the batched tolerance of docs/performance.md: the passes group the clients
differently). Each actor gets its share of this process's torch threads; a different thread
count changes the order of floating-point sums (the tiny model's train loss moved in its 8th
digit at 2 threads against 1), so the equality is tested against a local run on 1 thread.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Optional, Protocol

import torch

from pflbench.config import RunSpec
from pflbench.errors import UserError
from pflbench.federation.batched import clients_per_pass, groups, train_batched
from pflbench.federation.client import ClientJob, ClientOutcome, payload_schema, train_client
from pflbench.federation.resolve import resolve

BACKENDS = ("local", "ray")


class Backend(Protocol):
    name: str
    # False: the server's store keeps each client's private tensors, state and codec memory and
    # they travel with its job. True: the clients keep them (a Flower federation): the server
    # never sees them and asks the clients to score themselves (``evaluate``).
    holds_client_state: bool

    def train(self, jobs: list[ClientJob]) -> Iterator[ClientOutcome]:
        """Outcomes in the order of ``jobs``."""

    # only where ``holds_client_state``: every client's scores, as ``client.evaluate_client``
    # gives them, each client scoring itself
    # def evaluate(self, global_shared, server, participation) -> list[dict]

    def close(self) -> None: ...


class LocalBackend:
    """In this process, on the experiment's model: the spec's ``parallel_clients`` sampled
    clients in one pass where the method allows (``batched.clients_per_pass``), else one
    client after another."""

    name = "local"
    holds_client_state = False

    def __init__(self, exp):
        self.exp, self.schema = exp, payload_schema(exp)
        self.parallel = clients_per_pass(exp, exp.spec.parallel_clients)

    def train(self, jobs: list[ClientJob]) -> Iterator[ClientOutcome]:
        yield from train_in_passes(self.exp, self.schema, jobs, self.parallel)

    def close(self) -> None:
        pass


def train_in_passes(exp, schema, jobs: list[ClientJob], parallel: int) -> Iterator[ClientOutcome]:
    """``jobs`` in order, ``parallel`` clients in one pass over the base model (1: one by one)."""
    for group in groups(jobs, parallel):
        if len(group) > 1:
            yield from train_batched(exp, schema, group)
        else:
            yield train_client(exp, schema, group[0])


# A Ray worker that dies mid-round (killed, out of memory, its node gone) is restarted and its
# share of the round trained again, up to this many times: a share's outcome depends only on
# its jobs, so the record is the one an uninterrupted run gives. After that its clients are
# recorded as failed (lost updates, state as it was).
RAY_RETRIES = 2


class _Worker:
    """A Ray actor: one resolved experiment (base model, adapters, clients' data)."""

    def __init__(self, spec_dict: dict, threads: int):
        torch.set_num_threads(threads)
        self.exp = resolve(RunSpec.from_dict(spec_dict))
        self.schema = payload_schema(self.exp)
        self.parallel = clients_per_pass(self.exp, self.exp.spec.parallel_clients)

    def pid(self) -> int:
        return os.getpid()

    def train(self, jobs: list[ClientJob]) -> list[ClientOutcome]:
        """This worker's share of a round, ``parallel`` clients in one pass."""
        return list(train_in_passes(self.exp, self.schema, jobs, self.parallel))


class RayBackend:
    """A round's sampled clients split into one contiguous share per actor; each actor trains
    its share in passes of the spec's ``parallel_clients`` (batched where the method allows)."""

    name = "ray"
    holds_client_state = False

    def __init__(self, exp, workers: int, address: Optional[str] = None):
        ray = ray_init(address, workers)
        # this process's threads split between the actors (more would oversubscribe the cores)
        self.ray, threads = ray, max(1, torch.get_num_threads() // workers)
        actor = ray.remote(num_cpus=1, max_restarts=RAY_RETRIES, max_task_retries=RAY_RETRIES)(_Worker)
        self.workers = [actor.remote(exp.spec.to_dict(), threads) for _ in range(workers)]
        self.parallel = clients_per_pass(exp, exp.spec.parallel_clients)

    def train(self, jobs: list[ClientJob]) -> Iterator[ClientOutcome]:
        n = len(self.workers)
        shares = [jobs[i * len(jobs) // n:(i + 1) * len(jobs) // n] for i in range(n)]
        pending = [(share, w.train.remote(share)) for w, share in zip(self.workers, shares) if share]
        for share, ref in pending:
            try:
                yield from self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:  # died more than RAY_RETRIES times
                reason = f"Ray worker died {RAY_RETRIES + 1} times: {last_line(exc)}"
                yield from (ClientOutcome.lost(j.client, reason) for j in share)
            except self.ray.exceptions.RayError as exc:  # the worker's error, as one line naming the client
                job = share[0] if len(share) == 1 else None
                who = f"client {job.client}" if job else f"clients {[j.client for j in share]}"
                raise UserError(f"Ray worker failed on round {share[0].round}, {who}: {last_line(exc)}") from None

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
        self.workers = []


def ray_init(address: Optional[str], cpus: int):
    """Ray, started on this machine with at least ``cpus`` CPUs, or joined at ``address`` (a
    running cluster); ``ray`` itself. Its workers import pflbench from this environment (a
    cluster's nodes must have it installed too); their PYTHONPATH starts with this pflbench's
    parent folder, as a folder named pflbench in the working directory would otherwise shadow
    an editable install in them."""
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": _actor_pythonpath()}},
                 **({} if address else {"num_cpus": max(cpus, os.cpu_count() or 1)}))
    return ray


def _actor_pythonpath() -> str:
    from pathlib import Path

    import pflbench

    here = str(Path(pflbench.__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)


def last_line(exc: Exception | str) -> str:
    """The innermost error of a Ray exception (its text ends with the worker's own), or of a
    traceback's text (a Flower node's error reason)."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip() and not l.startswith((" ", "\x1b"))]
    errors = [l for l in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", l)]
    return (errors or lines or [type(exc).__name__])[-1][:300]


def make_backend(name: str, exp, workers: Optional[int] = None, address: Optional[str] = None) -> Backend:
    if name == "local":
        return LocalBackend(exp)
    if name == "ray":
        return RayBackend(exp, workers or 2, address)
    raise UserError(f"unknown --backend {name!r}; choose one of {', '.join(BACKENDS)}")


MAX_WORKERS = 1024


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """``--ray-address HOST:PORT`` (or ``ray://HOST:PORT``) must answer a TCP connection within
    ``timeout_s``: ``ray.init`` on an address nobody listens at retries for minutes. ``auto``
    (a cluster started on this machine) is left to Ray."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--ray-address {address!r}: give HOST:PORT (e.g. 127.0.0.1:6379, what `ray start --head` printed), "
                        f"ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); start a cluster with "
                        f"`ray start --head` or give the address it printed") from None


def check_backend(name: str, workers: Optional[int], address: Optional[str] = None) -> None:
    """Refuse a bad backend choice before anything heavy is loaded."""
    if name not in BACKENDS:
        raise UserError(f"unknown --backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be a positive integer, got {workers}")
    if workers is not None and workers > MAX_WORKERS:  # each is a process holding the model
        raise UserError(f"--workers {workers} is more than {MAX_WORKERS} processes; a worker trains a share of a round's "
                        f"clients, so more than the clients of a round stay idle")
    if name == "ray":
        _import_ray()
        if address:
            check_ray_address(address)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'pflbench[ray]'") from None
    return ray
