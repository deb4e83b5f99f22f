"""A pflbench run as a Flower app (flwr >= 1.21, the Message API): ``pflbench export flower``
writes a ServerApp and a ClientApp that call the functions here.

The ServerApp runs the engine's own round loop (``engine.Runner``) with ``FlowerBackend`` as
its backend: sampling, the channel, decoding and the method's ``aggregate`` stay on the server,
exactly as in a local run. Each sampled client gets a ``train`` message (the round's global
shared tensors, the method's server state and the job's scalars) and runs
``federation.client.train_client`` on its own copy of the experiment: the same local update,
the same codec, and the payload goes back as the codec's bytes, unchanged (a ConfigRecord
bytes value), so the bytes counted are those a device sends. A client's private tensors, its
state and its codec memory never leave it: they live in the node's ``context.state``. To
score, the server sends every client an ``evaluate`` message and each scores itself.

A node acts as client ``partition-id`` of its node config (Flower's simulation sets it; a
real SuperNode is started with ``--node-config "partition-id=N"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from pflbench import __version__
from pflbench.config import RunSpec
from pflbench.errors import UserError
from pflbench.federation.client import (
    ClientJob,
    ClientOutcome,
    evaluate_client,
    evaluate_shared_alone,
    payload_schema,
    train_client,
)
from pflbench.federation.engine import Runner
from pflbench.federation.resolve import resolve
from pflbench.results.record import atomic_write, dumps

SPEC_FILE = "spec.json"


def _flwr():
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise UserError("the Flower app needs flwr: pip install 'pflbench[flower]'") from None
    from flwr import app as fapp

    return fapp


def read_spec(path: Path):
    return RunSpec.from_dict(json.loads(Path(path).read_text()))


# ---- the client side --------------------------------------------------------------------
_EXPERIMENTS: dict[str, Any] = {}  # spec JSON -> (experiment, schema, initial private tensors), one per process


def _experiment(spec):
    key = spec.canonical_json()
    if key not in _EXPERIMENTS:
        exp = resolve(spec)
        params = dict(exp.loaded.model.named_parameters())
        initial = {n: params[n].detach().clone() for n in exp.parts.private}
        _EXPERIMENTS[key] = (exp, payload_schema(exp), initial)
    return _EXPERIMENTS[key]


def _tensors(record) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in record.to_torch_state_dict().items()} if record is not None else {}


def _client_id(context, clients: int) -> int:
    try:
        c = int(context.node_config["partition-id"])
    except (KeyError, TypeError, ValueError):
        raise UserError("a pflbench ClientApp needs the node config partition-id (the client it acts as)") from None
    if not 0 <= c < clients:
        raise UserError(f"partition-id {c} is outside the run's {clients} clients")
    return c


def client_app(spec_path: Path):
    """The ClientApp of the run in ``spec_path``."""
    fapp = _flwr()
    from flwr.clientapp import ClientApp

    spec = read_spec(spec_path)
    app = ClientApp()

    @app.query()
    def query(msg, context):
        return fapp.Message(fapp.RecordDict({"who": fapp.ConfigRecord({"client": _client_id(context, spec.clients)})}), reply_to=msg)

    @app.train()
    def train(msg, context):
        exp, schema, initial = _experiment(spec)
        c = _client_id(context, spec.clients)
        job_cfg = msg.content.config_records["job"]
        kept = context.state.array_records
        delivered = job_cfg["delivered"]
        job = ClientJob(
            round=int(job_cfg["round"]), client=c, lr=float(job_cfg["lr"]),
            global_shared=_tensors(msg.content.array_records.get("global")),
            private=_tensors(kept.get("private")) or initial, state=_tensors(kept.get("state")),
            server=_tensors(msg.content.array_records.get("server")), codec_memory=_tensors(kept.get("codec")),
            participation=int(job_cfg["participation"]), delivered=None if delivered == "" else delivered == "yes")
        out = train_client(exp, schema, job)
        for name, tensors in (("private", out.private), ("state", out.state), ("codec", out.codec_memory)):
            context.state[name] = fapp.ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in tensors.items()})
        reply = fapp.ConfigRecord({"payload": out.payload, "num_samples": out.num_samples, "train_loss": float(out.train_loss),
                                   "reward": float(out.reward), "compute_s": float(out.compute_s), "diverged": out.diverged or ""})
        return fapp.Message(fapp.RecordDict({"result": reply}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg, context):
        exp, _, initial = _experiment(spec)
        c = _client_id(context, spec.clients)
        kept = context.state.array_records
        trained = bool(msg.content.config_records["job"]["trained"])
        global_shared = _tensors(msg.content.array_records.get("global"))
        if exp.parts.private and "private" in kept:  # as the engine: own private tensors, or the shared part alone
            scores = evaluate_client(exp, exp.clients[c], global_shared, _tensors(kept.get("private")),
                                     _tensors(kept.get("state")), initial, trained)
        else:
            (scores,) = evaluate_shared_alone(exp, [exp.clients[c]], global_shared, initial, {c: 1} if trained else {})
        return fapp.Message(fapp.RecordDict({"scores": fapp.ConfigRecord({"json": json.dumps(scores)})}), reply_to=msg)

    return app


# ---- the server side --------------------------------------------------------------------
class FlowerBackend:
    """The engine's backend over a Flower grid: jobs and evaluations become messages."""

    name = "flower"
    holds_client_state = True

    def __init__(self, grid, clients: int, timeout: Optional[float] = None):
        self.fapp, self.grid, self.timeout = _flwr(), grid, timeout
        nodes = list(grid.get_node_ids())
        replies = self._send([self.fapp.Message(self.fapp.RecordDict(), dst_node_id=n, message_type="query") for n in nodes])
        self.node_of: dict[int, int] = {}
        for reply in replies:
            self.node_of[int(reply.content.config_records["who"]["client"])] = reply.metadata.src_node_id
        missing = sorted(set(range(clients)) - set(self.node_of))
        if missing:
            raise UserError(f"the Flower federation has no node for client(s) {missing[:5]}: start one SuperNode per client "
                            f"({clients}) with partition-id 0..{clients - 1}")

    def _send(self, messages: list) -> list:
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        errors = [r.error.reason for r in replies if r.has_error()]
        if errors:
            raise RuntimeError(f"a Flower client failed: {errors[0]}")
        if len(replies) != len(messages):
            raise RuntimeError(f"{len(messages) - len(replies)} Flower client(s) did not reply in time")
        return replies

    def _message(self, client: int, kind: str, config: dict, global_shared: dict, server: dict):
        f = self.fapp
        content = f.RecordDict({"job": f.ConfigRecord(config),
                                "global": f.ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in global_shared.items()}),
                                "server": f.ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in server.items()})})
        return f.Message(content, dst_node_id=self.node_of[client], message_type=kind)

    def train(self, jobs: list[ClientJob]) -> Iterator[ClientOutcome]:
        messages = [self._message(j.client, "train", {
            "round": j.round, "lr": float(j.lr), "participation": j.participation,
            "delivered": "" if j.delivered is None else ("yes" if j.delivered else "no")}, j.global_shared, j.server)
            for j in jobs]
        by_node = {r.metadata.src_node_id: r for r in self._send(messages)}
        for j in jobs:
            res = by_node[self.node_of[j.client]].content.config_records["result"]
            yield ClientOutcome(client=j.client, payload=bytes(res["payload"]), private={}, state={}, codec_memory={},
                                num_samples=int(res["num_samples"]), train_loss=float(res["train_loss"]),
                                reward=float(res["reward"]), compute_s=float(res["compute_s"]),
                                diverged=res["diverged"] or None)

    def evaluate(self, global_shared: dict, server: dict, participation: dict[int, int]) -> list[dict[str, Any]]:
        clients = sorted(self.node_of)
        messages = [self._message(c, "evaluate", {"trained": c in participation}, global_shared, server) for c in clients]
        by_node = {r.metadata.src_node_id: r for r in self._send(messages)}
        return [json.loads(by_node[self.node_of[c]].content.config_records["scores"]["json"]) for c in clients]

    def close(self) -> None:
        pass


def server_app(spec_path: Path):
    """The ServerApp of the run in ``spec_path``: the engine's round loop over the grid; writes
    the run's record and the final global tensors to the run config's ``results-dir``
    (default: ``results`` beside the spec)."""
    _flwr()
    from flwr.serverapp import ServerApp

    spec = read_spec(spec_path)
    app = ServerApp()

    @app.main()
    def main(grid, context):
        import os
        import time

        from safetensors.torch import save_file

        out = Path(os.environ.get("PFLBENCH_FLOWER_RESULTS") or str(context.run_config.get("results-dir", "results")))
        t0 = time.perf_counter()
        exp = resolve(spec)
        runner = Runner(exp, None, None, FlowerBackend(grid, spec.clients))
        record = runner.run(t0)
        out.mkdir(parents=True, exist_ok=True)
        (out / "record.json").write_text(dumps(record, sort_keys=True))
        save_file({n: t.detach().cpu().contiguous() for n, t in runner.global_shared.items()}, str(out / "global.safetensors"))

    return app


# ---- the export --------------------------------------------------------------------------
_SERVER = '''"""ServerApp of {method} on {task} (written by `pflbench export flower`; the run is spec.json)."""
from pathlib import Path

from pflbench.export.flower import server_app

app = server_app(Path(__file__).with_name("spec.json"))
'''
_CLIENT = '''"""ClientApp of {method} on {task} (written by `pflbench export flower`; the run is spec.json)."""
from pathlib import Path

from pflbench.export.flower import client_app

app = client_app(Path(__file__).with_name("spec.json"))
'''
_SIMULATE = '''"""Run this app under Flower's simulation engine, one virtual SuperNode per client:
    python -m pflbench_app.simulate [RESULTS_DIR]
The record and the final global tensors are written to RESULTS_DIR (default: results)."""
import sys

from pflbench_app.client_app import app as client
from pflbench_app.server_app import app as server
from pflbench.export.flower import read_spec, simulate

if __name__ == "__main__":
    simulate(server, client, read_spec(__import__("pathlib").Path(__file__).with_name("spec.json")),
             sys.argv[1] if len(sys.argv) > 1 else "results")
'''
_PYPROJECT = '''[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "pflbench-app-{slug}"
version = "1.0.0"
description = "{method} on {task}, exported by pflbench {version}"
dependencies = ["pflbench=={version}", "flwr[simulation]>=1.21"]

[tool.hatch.build.targets.wheel]
packages = ["pflbench_app"]

[tool.flwr.app]
publisher = "pflbench"

[tool.flwr.app.components]
serverapp = "pflbench_app.server_app:app"
clientapp = "pflbench_app.client_app:app"

[tool.flwr.app.config]
results-dir = "results"

[tool.flwr.federations]
default = "local-simulation"

[tool.flwr.federations.local-simulation]
options.num-supernodes = {clients}
'''


def export(spec, out: Path, force: bool = False) -> list[Path]:
    """Write the Flower app of ``spec`` into ``out``: ``pyproject.toml`` (the app's components
    and a local simulation federation of one SuperNode per client) and the package
    ``pflbench_app`` (``server_app.py``, ``client_app.py``, ``simulate.py``, ``spec.json``).
    A node trains its one client: the spec is written with ``parallel_clients`` 1."""
    from dataclasses import replace


    spec = replace(spec, parallel_clients=1)
    out = Path(out)
    pkg = out / "pflbench_app"
    try:
        pkg.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the Flower app to {out}: {exc.strerror}") from None
    names = {"method": spec.method, "task": spec.task, "version": __version__, "clients": spec.clients,
             "slug": f"{spec.method}-{spec.run_id}"}
    files = {
        out / "pyproject.toml": _PYPROJECT.format(**names),
        pkg / "__init__.py": "",
        pkg / SPEC_FILE: json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n",
        pkg / "server_app.py": _SERVER.format(**names),
        pkg / "client_app.py": _CLIENT.format(**names),
        pkg / "simulate.py": _SIMULATE,
    }
    theirs = [p for p, text in files.items() if p.exists() and (p.is_dir() or p.read_bytes() != text.encode())]
    if theirs and not force:
        raise UserError(f"{theirs[0]} exists and is not this app's; export into an empty folder, or pass --force to "
                        f"overwrite {len(theirs)} file(s)")

    for path, text in files.items():
        try:
            atomic_write(path, text)  # a folder in the way fails its rename (IsADirectoryError)
        except OSError as exc:
            raise UserError(f"cannot write the Flower app to {out}: {path} {exc.strerror or exc}") from None
    return list(files)


def simulate(server, client, spec, results_dir, workers: int = 2) -> Path:
    """Run a ServerApp and ClientApp of ``spec`` under Flower's simulation engine (Ray), one
    SuperNode per client, ``workers`` ClientApps at a time; returns the results folder."""
    from flwr.simulation import run_simulation

    results_dir = Path(results_dir).resolve()
    import os

    os.environ["PFLBENCH_FLOWER_RESULTS"] = str(results_dir)
    run_simulation(server_app=server, client_app=client, num_supernodes=spec.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": workers, "include_dashboard": False}})
    return results_dir
