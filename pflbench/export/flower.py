"""A pflbench run as a Flower app (flwr >= 1.21, the Message API): ``pflbench export flower``
writes a ServerApp and a ClientApp that call the functions here.

The ServerApp runs the engine's own round loop (``engine.Runner``) with ``FlowerBackend`` as
its backend: sampling, the channel, decoding and the method's ``aggregate`` stay on the server,
exactly as in a local run. Each sampled client gets a ``train`` message (the round's global
shared tensors, the method's server state and the job's scalars) and runs
``federation.client.train_client`` on its own copy of the experiment: the same local update,
the same codec, and the payload goes back as the codec's bytes, unchanged (a ConfigRecord
bytes value), so the bytes counted are those a device sends; under ``--secagg`` the job carries
the round's public keys (``secagg.Setup``) and the payload is the node's masked vector, so the
server never holds one upload. A client's private tensors, its
state and its codec memory never leave it: they live in the node's ``context.state``. To
score, the server sends every client an ``evaluate`` message and each scores itself.

A node acts as client ``partition-id`` of its node config (Flower's simulation sets it; a
real SuperNode is started with ``--node-config "partition-id=N"``). With ``state-dir=DIR`` in
its node config too, a node also keeps its client's tensors in ``DIR`` (the device's storage),
so a SuperNode restarted after a crash goes on from its client's last finished round; without
it a restarted node starts its client again from the initial private tensors.

Faults: the server asks which node is which client at every round, so a node that joins late
(or replaces a dead one) is used from the next round on. A node that dies mid-round is reported
by the SuperLink as unavailable once it misses its heartbeats (about a minute with flwr's
defaults): that client's update is recorded as failed (a lost update, ``rounds[].failed``) and
the round goes on. An error raised by the ClientApp stops the run in one line naming the node
and the client.
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
from pflbench.federation.backends import last_line
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


KEPT = ("private", "state", "codec")  # what a node keeps of its client between rounds


def _kept(context, c: int) -> dict[str, dict[str, torch.Tensor]]:
    """The client's tensors the node keeps: in ``context.state``, else (a restarted node) in
    its ``state-dir``, else none yet."""
    kept = context.state.array_records
    if "private" not in kept and (path := _state_file(context, c)) is not None and path.exists():
        from safetensors.torch import load_file

        flat = load_file(str(path))
        return {k: {n.partition("/")[2]: t for n, t in flat.items() if n.startswith(k + "/")} for k in KEPT}
    return {k: _tensors(kept.get(k)) for k in KEPT}


def _keep(context, c: int, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
    fapp = _flwr()
    for name in KEPT:
        context.state[name] = fapp.ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in tensors[name].items()})
    if (path := _state_file(context, c)) is not None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        flat = {f"{k}/{n}": t.detach().cpu().contiguous() for k in KEPT for n, t in tensors[k].items()}
        tmp = path.with_suffix(".tmp")
        save_file(flat, str(tmp))
        tmp.replace(path)  # a node killed while writing keeps the previous round's file


def _state_file(context, c: int) -> Optional[Path]:
    where = context.node_config.get("state-dir")
    return Path(str(where)) / f"client-{c}.safetensors" if where else None


def _client_id(context, clients: int) -> int:
    try:
        c = int(context.node_config["partition-id"])
    except (KeyError, TypeError, ValueError):
        raise UserError("a pflbench ClientApp needs the node config partition-id (the client it acts as)") from None
    if not 0 <= c < clients:
        raise UserError(f"partition-id {c} is outside the run's {clients} clients")
    return c


def _setup(job_cfg):
    """--secagg: the server's broadcast of the round's keys, which this node masks its upload with
    (``secagg.Setup``); None when the run has no secure aggregation."""
    raw = job_cfg.get("secagg", b"")
    if not raw:
        return None
    from pflbench.federation.secagg import Setup

    return Setup.from_bytes(bytes(raw))


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
        kept = _kept(context, c)
        delivered = job_cfg["delivered"]
        job = ClientJob(
            round=int(job_cfg["round"]), client=c, lr=float(job_cfg["lr"]),
            global_shared=_tensors(msg.content.array_records.get("global")),
            private=kept["private"] or initial, state=kept["state"],
            server=_tensors(msg.content.array_records.get("server")), codec_memory=kept["codec"],
            participation=int(job_cfg["participation"]), delivered=None if delivered == "" else delivered == "yes",
            secagg=_setup(job_cfg))
        out = train_client(exp, schema, job)
        _keep(context, c, {"private": out.private, "state": out.state, "codec": out.codec_memory})
        reply = fapp.ConfigRecord({"payload": out.payload, "num_samples": out.num_samples, "train_loss": float(out.train_loss),
                                   "reward": float(out.reward), "compute_s": float(out.compute_s), "diverged": out.diverged or ""})
        return fapp.Message(fapp.RecordDict({"result": reply}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg, context):
        exp, _, initial = _experiment(spec)
        c = _client_id(context, spec.clients)
        kept = _kept(context, c)
        trained = bool(msg.content.config_records["job"]["trained"])
        global_shared = _tensors(msg.content.array_records.get("global"))
        if exp.parts.private and kept["private"]:  # as the engine: own private tensors, or the shared part alone
            scores = evaluate_client(exp, exp.clients[c], global_shared, kept["private"], kept["state"], initial, trained)
        else:
            (scores,) = evaluate_shared_alone(exp, [exp.clients[c]], global_shared, initial, {c: 1} if trained else {})
        return fapp.Message(fapp.RecordDict({"scores": fapp.ConfigRecord({"json": json.dumps(scores)})}), reply_to=msg)

    return app


# ---- the server side --------------------------------------------------------------------
# flwr's ErrorCode values for a message or node that went away (MESSAGE_UNAVAILABLE,
# REPLY_MESSAGE_UNAVAILABLE, NODE_UNAVAILABLE, CLIENT_APP_CRASHED): a lost update, not a bug
GONE = {3: "message unavailable", 4: "reply unavailable", 5: "node unavailable", 8: "ClientApp crashed"}


class FlowerBackend:
    """The engine's backend over a Flower grid: jobs and evaluations become messages. Which
    node acts as which client is asked again at every round (``_map``), so a node that joins
    late or replaces a dead one takes its client's next job; a client without a node, or whose
    node went away mid-round, fails (a lost update). ``transport`` holds the bytes of the
    round's Flower messages (``wire_bytes``)."""

    name = "flower"
    holds_client_state = True

    def __init__(self, grid, clients: int, timeout: Optional[float] = None, wait_s: float = 180.0):
        self.fapp, self.grid, self.timeout, self.clients, self.wait_s = _flwr(), grid, timeout, clients, wait_s
        self.node_of: dict[int, int] = {}
        # train messages (down) and their replies (up), as Flower serializes them; scoring and
        # the which-client queries apart (both ways)
        self.transport = {"downlink_bytes": 0, "uplink_bytes": 0, "other_bytes": 0}
        self._map(wait_for_all=True)
        missing = sorted(set(range(clients)) - set(self.node_of))
        if missing:
            raise UserError(f"the Flower federation has no node for client(s) {missing[:5]}: start one SuperNode per client "
                            f"({clients}) with partition-id 0..{clients - 1}")

    def _map(self, wait_for_all: bool = False) -> None:
        """Ask the connected nodes not yet known which client each acts as (a newer node of a
        client replaces an older one); with ``wait_for_all``, until every client has one or
        ``wait_s`` passed."""
        import time

        deadline = time.monotonic() + self.wait_s
        while True:
            online = set(self.grid.get_node_ids())
            self.node_of = {c: n for c, n in self.node_of.items() if n in online}
            known = set(self.node_of.values())
            new = sorted(n for n in online if n not in known)
            if new:
                queries = {-n: self.fapp.Message(self.fapp.RecordDict(), dst_node_id=n, message_type="query") for n in new}
                for reply in self._send(queries).values():
                    if not isinstance(reply, str):  # a node that went away again is asked next time
                        self.node_of[int(reply.content.config_records["who"]["client"])] = reply.metadata.src_node_id
            if not wait_for_all or len(self.node_of) == self.clients or time.monotonic() > deadline:
                return
            time.sleep(1.0)

    def _send(self, messages: dict[int, Any], down: str = "other_bytes", up: str = "other_bytes") -> dict[int, Any]:
        """{client: message} -> {client: reply or the reason it is lost}; their bytes are added
        to ``transport[down]`` and ``transport[up]``. A ClientApp's own error stops the run in one
        line naming the node and the client."""
        for m in messages.values():
            self.transport[down] += wire_bytes(m)
        replies = {r.metadata.src_node_id: r for r in self.grid.send_and_receive(list(messages.values()), timeout=self.timeout)}
        by_reply_to = {r.metadata.reply_to_message_id: r for r in replies.values()}
        out: dict[int, Any] = {}
        for c, m in messages.items():
            node = m.metadata.dst_node_id
            who = f"SuperNode {node}" + (f" (client {c})" if c >= 0 else "")  # a query's key is -node
            reply = replies.get(node) or by_reply_to.get(m.metadata.message_id)
            if reply is None:
                out[c] = f"{who} did not reply in time"
            elif reply.has_error():
                if reply.error.code not in GONE:
                    raise UserError(f"{who} failed: {last_line(reply.error.reason or '(no reason given)')}")
                out[c] = f"{who}: {GONE[reply.error.code]}"
            else:
                self.transport[up] += wire_bytes(reply)
                out[c] = reply
        return out

    def _message(self, client: int, kind: str, config: dict, global_shared: dict, server: dict):
        f = self.fapp
        content = f.RecordDict({"job": f.ConfigRecord(config),
                                "global": f.ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in global_shared.items()}),
                                "server": f.ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in server.items()})})
        return f.Message(content, dst_node_id=self.node_of[client], message_type=kind)

    def train(self, jobs: list[ClientJob]) -> Iterator[ClientOutcome]:
        self._map()
        messages = {j.client: self._message(j.client, "train", {
            "round": j.round, "lr": float(j.lr), "participation": j.participation,
            "delivered": "" if j.delivered is None else ("yes" if j.delivered else "no"),
            "secagg": j.secagg.to_bytes() if j.secagg else b""}, j.global_shared, j.server)
            for j in jobs if j.client in self.node_of}
        replies = self._send(messages, "downlink_bytes", "uplink_bytes")
        for j in jobs:
            reply = replies.get(j.client, f"no SuperNode acts as client {j.client}")
            if isinstance(reply, str):
                yield ClientOutcome.lost(j.client, reply)
                continue
            res = reply.content.config_records["result"]
            yield ClientOutcome(client=j.client, payload=bytes(res["payload"]), private={}, state={}, codec_memory={},
                                num_samples=int(res["num_samples"]), train_loss=float(res["train_loss"]),
                                reward=float(res["reward"]), compute_s=float(res["compute_s"]),
                                diverged=res["diverged"] or None)

    def evaluate(self, global_shared: dict, server: dict, participation: dict[int, int]) -> list[dict[str, Any]]:
        """Every client scores itself; a client without a node waits for one (``wait_s``)."""
        self._map(wait_for_all=True)
        clients = list(range(self.clients))
        missing = [c for c in clients if c not in self.node_of]
        if missing:
            raise UserError(f"no SuperNode acts as client(s) {missing[:5]} to score them after {self.wait_s:.0f} s; "
                            f"start one with --node-config partition-id=N (and its state-dir, to keep its state)")
        replies = self._send({c: self._message(c, "evaluate", {"trained": c in participation}, global_shared, server)
                              for c in clients})
        lost = [r for r in replies.values() if isinstance(r, str)]
        if lost:
            raise UserError(f"a client could not be scored: {lost[0]}")
        return [json.loads(replies[c].content.config_records["scores"]["json"]) for c in clients]

    def close(self) -> None:
        pass


def wire_bytes(message) -> int:
    """The bytes of a Flower message as Flower serializes it for the wire: its metadata and
    every object of its content (records, arrays) deflated, as a SuperNode pulls or pushes
    them; without the HTTP or gRPC framing and TLS around them."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(o.deflate()) for o in get_all_nested_objects(message).values())


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
