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
    args = [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    code, out, err = cli("export", "flower", "--out", str(app), *args)
    assert code == 0, err
    return out


def _local_run(app):
    """The exported spec run on the local backend: (its Runner, its record)."""
    spec = RunSpec.from_dict(json.loads((app / "pflbench_app" / "spec.json").read_text()))
    assert spec.parallel_clients == 1  # a node trains its one client
    runner = Runner(resolve(spec), None, None)
    return runner, runner.run(0.0)


@pytest.mark.slow
def test_exported_flower_app_matches_the_local_backend(cli, tmp_path, without_timing):
    pytest.importorskip("flwr", reason="pflbench[flower] is installed by make setup")
    from safetensors.torch import load_file

    out = _export(cli, tmp_path / "app", **LOSSY_PFTT, clients=4, clients_per_round=3)
    written = {os.path.relpath(p, tmp_path / "app") for p in out.split()}
    assert {"pyproject.toml", "pflbench_app/server_app.py", "pflbench_app/client_app.py", "pflbench_app/spec.json"} <= written

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(tmp_path / "app"))
    proc = subprocess.run([sys.executable, "-m", "pflbench_app.simulate", str(tmp_path / "results")],
                          cwd=tmp_path / "app", env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    flower = json.loads((tmp_path / "results" / "record.json").read_text())
    tensors = load_file(str(tmp_path / "results" / "global.safetensors"))

    runner, local = _local_run(tmp_path / "app")
    assert [r["uplink_bytes"] for r in flower["rounds"]] == [r["uplink_bytes"] for r in local["rounds"]]
    assert any(r["lost"] or r["late"] for r in local["rounds"])  # the lossy case happened
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


@pytest.mark.slow
def test_the_exported_app_runs_deployed_on_a_superlink_and_supernodes(cli, tmp_path, without_timing):
    """As Flower documents deployment: `flower-superlink --insecure`, one `flower-supernode` per
    client (`--node-config partition-id=N`), then `flwr run APP CONNECTION` against them (a
    SuperLink connection in the Flower configuration). The ServerApp's record is the local
    backend's, timing apart: PFTT's private LoRA and top-k's memory stay on the nodes, and the
    lossy channel's decisions on the server."""
    pytest.importorskip("flwr", reason="pflbench[flower] is installed by make setup")
    import shutil
    import signal
    import time
    from pathlib import Path

    clients = 2
    _export(cli, tmp_path / "app", **LOSSY_PFTT, clients=clients, clients_per_round=clients)
    bin_dir = Path(sys.executable).parent
    assert shutil.which("flower-superlink", path=str(bin_dir)), "flwr's commands come with pflbench[flower]"
    home, link_dir = tmp_path / "flwr-home", tmp_path / "superlink"
    home.mkdir()
    link_dir.mkdir()
    # flwr 1.42's SuperLink serves its Runtime, Fleet and Control APIs over HTTP on one port
    link, *node_ports = _free_ports(1 + clients)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
                                      f'address = "127.0.0.1:{link}"\ninsecure = true\n')
    env = dict(os.environ, HF_HUB_OFFLINE="1", FLWR_HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    procs = []

    def start(cmd, cwd, log):
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True))

    try:
        # the app's dependencies are this environment's (pflbench is not on a registry here)
        start(["flower-superlink", "--insecure", "--disable-runtime-dependency-installation", "--port", str(link)],
              link_dir, tmp_path / "superlink.log")
        time.sleep(5)
        for i, port in enumerate(node_ports):
            start(["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}", "--node-config", f"partition-id={i}",
                   "--port", str(port)], tmp_path, tmp_path / f"supernode{i}.log")
        done = subprocess.run(["flwr", "run", str(tmp_path / "app"), "deploy", "--stream"], cwd=tmp_path / "app", env=env,
                              capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
        logs = "".join((tmp_path / f).read_text(errors="replace")[-1500:] for f in ("superlink.log", "supernode0.log"))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + logs
        assert (link_dir / "results" / "record.json").exists(), done.stdout[-3000:] + logs
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    deployed = json.loads((link_dir / "results" / "record.json").read_text())
    _, local = _local_run(tmp_path / "app")
    assert any(r["lost"] or r["late"] for r in local["rounds"])  # the lossy case happened
    assert without_timing(deployed) == without_timing(local)
