"""The Flower export: the exported app, run under Flower's simulation engine, gives the local
backend's bytes, aggregated tensors and scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pflbench.config import RunSpec
from pflbench.federation.engine import Runner
from pflbench.federation.resolve import resolve


# PFTT (private LoRA kept on each node) under a lossy channel with top-k (codec memory on the
# node, lost uploads): everything a device keeps and everything the server decides
LOSSY_PFTT = dict(method="pftt", task="synth-world", channel="lte-cell-edge", codec="topk:0.25", rounds=2, local_steps=2,
                  batch_size=4)


def _export(cli, app, **flags) -> str:
    """`pflbench export flower --out APP` with these run flags; its stdout (the files written)."""
    args = [x for k, v in flags.items() for x in ((f"--{k.replace('_', '-')}",) if v is True else (f"--{k.replace('_', '-')}", str(v)))]
    code, out, err = cli("export", "flower", "--out", str(app), *args)
    assert code == 0, err
    return out


def _local_run(app, backend=None, threads=None):
    """The exported spec run on the local backend (or ``backend(exp)``), on ``threads`` torch
    threads as the nodes train (the simulation's ClientApps get one CPU each; a SuperNode's
    ClientApp, torch's default): the order of floating-point sums follows the threads.
    Returns (its Runner, its record)."""
    spec = RunSpec.from_dict(json.loads((app / "pflbench_app" / "spec.json").read_text()))
    assert spec.parallel_clients == 1  # a node trains its one client
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        exp = resolve(spec)
        runner = Runner(exp, None, None, backend(exp) if backend else None)
        return runner, runner.run(0.0)
    finally:
        torch.set_num_threads(before)


# the same under secure aggregation (fp32, which it needs): each node masks its own upload, the
# server unmasks the survivors' sum, a lost upload is a dropped client
LOSSY_SECAGG = dict(LOSSY_PFTT, codec="fp32", secagg=True)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [LOSSY_PFTT, LOSSY_SECAGG], ids=["topk", "secagg"])
def test_exported_flower_app_matches_the_local_backend(cli, tmp_path, without_timing, flags):
    pytest.importorskip("flwr", reason="pflbench[flower] is installed by make setup")
    from safetensors.torch import load_file

    out = _export(cli, tmp_path / "app", **flags, clients=4, clients_per_round=3)
    written = {os.path.relpath(p, tmp_path / "app") for p in out.split()}
    assert {"pyproject.toml", "pflbench_app/server_app.py", "pflbench_app/client_app.py", "pflbench_app/spec.json"} <= written

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(tmp_path / "app"))
    proc = subprocess.run([sys.executable, "-m", "pflbench_app.simulate", str(tmp_path / "results")],
                          cwd=tmp_path / "app", env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    flower = json.loads((tmp_path / "results" / "record.json").read_text())
    tensors = load_file(str(tmp_path / "results" / "global.safetensors"))

    runner, local = _local_run(tmp_path / "app", threads=1)
    assert [r["uplink_bytes"] for r in flower["rounds"]] == [r["uplink_bytes"] for r in local["rounds"]]
    assert any(r["lost"] or r["late"] for r in local["rounds"])  # the lossy case happened
    if flags.get("secagg"):  # masked on the nodes, unmasked on the server, a lost upload dropped
        assert any(r["secagg"]["dropped"] for r in flower["rounds"])
    assert set(tensors) == set(runner.global_shared)
    assert all(torch.equal(tensors[n], runner.global_shared[n]) for n in tensors)
    assert without_timing(flower) == without_timing(local)  # and so are the scores, evaluated on the nodes


def test_export_never_overwrites_a_users_file_without_force(cli, tmp_path):
    """A folder holding the user's own pyproject.toml: the export stops in one line and the
    file is untouched; --force overwrites it; exporting the same app again needs no --force."""
    mine = tmp_path / "pyproject.toml"
    mine.write_text("[project]\nname = 'my-own-project'\n")
    args = ["export", "flower", "--out", str(tmp_path), "--method", "pftt", "--clients", "2", "--clients-per-round", "1",
            "--rounds", "1"]
    code, out, err = cli(*args)
    assert code == 2 and "pyproject.toml exists and is not this app's" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1 and mine.read_text() == "[project]\nname = 'my-own-project'\n"
    assert not (tmp_path / "pflbench_app" / "spec.json").exists()
    code, out, err = cli(*args, "--force")
    assert code == 0 and "my-own-project" not in mine.read_text() and (tmp_path / "pflbench_app" / "spec.json").exists()
    code, out, err = cli(*args)  # the same app again: nothing of the user's is at stake
    assert code == 0, err


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _certificates(where):
    """A certificate authority and a SuperLink certificate for 127.0.0.1 it signed, as a user
    makes them for a test deployment (Flower's docs do it with openssl): (ca, cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    days = datetime.timedelta(days=1)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("pflbench test CA")).issuer_name(name("pflbench test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now - days)
          .not_valid_after(now + days).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - days).not_valid_after(now + days)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [where / "ca.crt", where / "server.pem", where / "server.key"]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Deployment:
    """A SuperLink and SuperNodes on 127.0.0.1, started as Flower documents deployment, and
    `flwr run` of an exported app against them (a SuperLink connection in FLWR_HOME's
    config.toml). Insecure, or with TLS (``tls``: certificates made here)."""

    def __init__(self, tmp_path, clients: int, tls: bool = False, state_dir: bool = False):
        import shutil
        from pathlib import Path

        self.tmp, self.clients, self.procs, self.nodes = tmp_path, clients, [], {}
        bin_dir = Path(sys.executable).parent
        assert shutil.which("flower-superlink", path=str(bin_dir)), "flwr's commands come with pflbench[flower]"
        self.home, self.link_dir = tmp_path / "flwr-home", tmp_path / "superlink"
        self.home.mkdir()
        self.link_dir.mkdir()
        # flwr 1.42's SuperLink serves its Runtime, Fleet and Control APIs over HTTP on one port
        self.link, *self.node_ports = _free_ports(1 + 2 * clients)
        if tls:
            ca, cert, key = _certificates(tmp_path)
            security = ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
            self.node_security = ["--root-certificates", str(ca)]
            connection = f'root-certificates = "{ca}"\n'
        else:
            security, self.node_security, connection = ["--insecure"], ["--insecure"], "insecure = true\n"
        (self.home / "config.toml").write_text(f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
                                               f'address = "127.0.0.1:{self.link}"\n{connection}')
        self.state_dir = tmp_path / "device-storage" if state_dir else None
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", FLWR_HOME=str(self.home),
                        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        # the app's dependencies are this environment's (pflbench is not on a registry here)
        self._start(["flower-superlink", *security, "--disable-runtime-dependency-installation", "--port", str(self.link)],
                    self.link_dir, tmp_path / "superlink.log")
        import time

        time.sleep(5)
        for c in range(clients):
            self.start_node(c)

    def _start(self, cmd, cwd, log):
        proc = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_node(self, client: int, nth: int = 0):
        """A SuperNode acting as ``client`` (its ``nth`` start: a replacement's log and port)."""
        config = f"partition-id={client}" + (f" state-dir='{self.state_dir / f'device-{client}'}'" if self.state_dir else "")
        log = self.tmp / f"supernode{client}-{nth}.log"
        self.nodes[client] = self._start(["flower-supernode", *self.node_security, "--superlink", f"127.0.0.1:{self.link}",
                                          "--node-config", config, "--port", str(self.node_ports[client + nth * self.clients])],
                                         self.tmp, log)
        return log

    def kill(self, client: int) -> None:
        import signal

        os.killpg(self.nodes[client].pid, signal.SIGKILL)

    def run(self, app):
        """`flwr run APP deploy --stream`; the ServerApp's record (written under the SuperLink's folder)."""
        done = subprocess.run(["flwr", "run", str(app), "deploy", "--stream"], cwd=app, env=self.env, capture_output=True,
                              text=True, timeout=1200, stdin=subprocess.DEVNULL)
        logs = "".join(p.read_text(errors="replace")[-1500:] for p in sorted(self.tmp.glob("*.log")))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + logs
        assert (self.link_dir / "results" / "record.json").exists(), done.stdout[-3000:] + logs
        return json.loads((self.link_dir / "results" / "record.json").read_text())

    def close(self) -> None:
        import signal

        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_exported_app_runs_deployed_on_a_superlink_and_supernodes(cli, tmp_path, without_timing):
    """As Flower documents deployment: `flower-superlink --insecure`, one `flower-supernode` per
    client (`--node-config partition-id=N`), then `flwr run APP CONNECTION` against them (a
    SuperLink connection in the Flower configuration). The ServerApp's record is the local
    backend's, timing and transport apart: PFTT's private LoRA and top-k's memory stay on the
    nodes, and the lossy channel's decisions on the server. The bytes Flower's messages took
    hold the payload the suite counts, with an overhead docs/scaling.md reports."""
    pytest.importorskip("flwr", reason="pflbench[flower] is installed by make setup")
    clients = 2
    _export(cli, tmp_path / "app", **LOSSY_PFTT, clients=clients, clients_per_round=clients)
    deployment = _Deployment(tmp_path, clients)
    try:
        deployed = deployment.run(tmp_path / "app")
    finally:
        deployment.close()
    _, local = _local_run(tmp_path / "app")
    assert any(r["lost"] or r["late"] for r in local["rounds"])  # the lossy case happened
    assert without_timing(deployed) == without_timing(local)
    for r in deployed["rounds"]:  # every payload byte crossed in a train reply, with Flower's framing around it
        wire = r["transport"]
        assert r["uplink_bytes"] < wire["uplink_bytes"] < 1.5 * r["uplink_bytes"] + 4096 * clients, wire
        # Flower sends equal arrays once (content-addressed objects): round 1's all-zero LoRA B
        # matrices make the broadcast smaller on the wire than the fp32 bytes counted
        assert 0.5 * r["downlink_bytes"] < wire["downlink_bytes"] < 1.5 * r["downlink_bytes"] + 4096 * clients, wire
    assert deployed["rounds"][-1]["transport"]["other_bytes"] > 0  # the final scoring's messages


@pytest.mark.slow
def test_a_supernode_killed_mid_round_is_a_lost_update_and_its_replacement_goes_on_over_tls(cli, tmp_path, without_timing):
    """Over TLS (a CA and a SuperLink certificate made here; the nodes and `flwr run` trust the
    CA): client 1's SuperNode is killed -9 as it receives its round-2 job, and a new SuperNode
    for client 1 joins late with the same device storage (state-dir). The run finishes without
    a hang: round 2 records client 1's update as failed (the SuperLink reports the dead node
    unavailable), round 3 trains it on its new node from its round-1 state, and the record is
    the local engine's with client 1 failing in round 2."""
    pytest.importorskip("flwr", reason="pflbench[flower] is installed by make setup")
    import time

    from pflbench.federation.backends import LocalBackend
    from pflbench.federation.client import ClientOutcome

    clients = 2
    _export(cli, tmp_path / "app", method="pftt", task="synth-world", rounds=3, local_steps=2, batch_size=4,
            clients=clients, clients_per_round=clients)
    deployment = _Deployment(tmp_path, clients, tls=True, state_dir=True)
    import threading

    killed = threading.Event()

    def kill_at_second_job():
        log = tmp_path / "supernode1-0.log"
        while not killed.is_set():
            if log.exists() and log.read_text(errors="replace").count("Receiving: train message") >= 2:
                deployment.kill(1)
                deployment.start_node(1, nth=1)  # the device comes back
                killed.set()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_at_second_job, daemon=True)
    watcher.start()
    try:
        deployed = deployment.run(tmp_path / "app")
    finally:
        killed.set()
        deployment.close()
    assert (tmp_path / "supernode1-1.log").exists(), "client 1's node was never killed"
    r1, r2, r3 = deployed["rounds"]
    assert [f["client"] for f in r2.get("failed", [])] == [1] and "unavailable" in r2["failed"][0]["reason"]
    assert r2["delivered"] == [0] and r3["delivered"] == [0, 1] and "failed" not in r1 and "failed" not in r3

    class Dying(LocalBackend):  # the same fault in the local engine
        def train(self, jobs):
            for out in super().train(jobs):
                yield ClientOutcome.lost(1, r2["failed"][0]["reason"]) if (jobs[0].round, out.client) == (2, 1) else out

    _, local = _local_run(tmp_path / "app", Dying)
    assert without_timing(deployed) == without_timing(local)


@pytest.mark.parametrize("code,lost", [(5, True), (3, True), (8, True), (2, False)])
def test_a_nodes_error_is_a_lost_update_or_one_line_naming_node_and_client(code, lost):
    """The server side alone, over a grid that answers as Flower's does: a node gone (the
    SuperLink's node-unavailable reply, an expired message, a crashed ClientApp) is a lost
    update naming the node; an exception raised in the ClientApp stops the run in one line
    naming the node and the client."""
    pytest.importorskip("flwr", reason="pflbench[flower] is installed by make setup")
    from flwr import app as fapp
    from flwr.app import Error
    from flwr.supercore.task_identity import TaskIdentity

    from pflbench.errors import UserError
    from pflbench.export.flower import FlowerBackend
    from pflbench.federation.client import ClientJob

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    client_of = {11: 0, 12: 1}

    class Grid:
        def get_node_ids(self):
            return list(client_of)

        def send_and_receive(self, messages, timeout=None):
            for m in messages:
                node, kind = m.metadata.dst_node_id, m.metadata.message_type
                if kind == "query":
                    yield fapp.Message(fapp.RecordDict({"who": fapp.ConfigRecord({"client": client_of[node]})}), reply_to=m)
                elif node == 12:
                    yield fapp.Message(Error(code=code, reason="Traceback...\nValueError: the device's disk is full"), reply_to=m)
                else:
                    yield fapp.Message(fapp.RecordDict({"result": fapp.ConfigRecord(
                        {"payload": b"\x01\x02", "num_samples": 3, "train_loss": 1.5, "reward": float("nan"), "compute_s": 0.1,
                         "diverged": ""})}), reply_to=m)

    backend = FlowerBackend(Grid(), clients=2)
    assert backend.node_of == {0: 11, 1: 12}
    jobs = [ClientJob(round=1, client=c, lr=0.01, global_shared={"w": torch.zeros(2)}, private={}, state={}, server={},
                      codec_memory={}, participation=0, delivered=None) for c in (0, 1)]
    if lost:
        first, second = backend.train(jobs)
        assert first.failed is None and first.payload == b"\x01\x02"
        assert second.failed.startswith("SuperNode 12 (client 1): ") and second.payload == b""
    else:
        with pytest.raises(UserError) as err:
            list(backend.train(jobs))
        assert str(err.value) == "SuperNode 12 (client 1) failed: ValueError: the device's disk is full"
