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


@pytest.mark.slow
def test_exported_flower_app_matches_the_local_backend(cli, tmp_path, without_timing):
    pytest.importorskip("flwr", reason="pflbench[flower] is installed by make setup")
    from safetensors.torch import load_file

    # PFTT (private LoRA kept on each node) under a lossy channel with top-k (codec memory on
    # the node, lost uploads): everything a device keeps and everything the server decides
    flags = dict(method="pftt", task="synth-world", channel="lte-cell-edge", codec="topk:0.25",
                 clients=4, clients_per_round=3, rounds=2, local_steps=2, batch_size=4)
    args = [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    code, out, err = cli("export", "flower", "--out", str(tmp_path / "app"), *args)
    assert code == 0, err
    written = {os.path.relpath(p, tmp_path / "app") for p in out.split()}
    assert {"pyproject.toml", "pflbench_app/server_app.py", "pflbench_app/client_app.py", "pflbench_app/spec.json"} <= written

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(tmp_path / "app"))
    proc = subprocess.run([sys.executable, "-m", "pflbench_app.simulate", str(tmp_path / "results")],
                          cwd=tmp_path / "app", env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    flower = json.loads((tmp_path / "results" / "record.json").read_text())
    tensors = load_file(str(tmp_path / "results" / "global.safetensors"))

    spec = RunSpec.from_dict(json.loads((tmp_path / "app" / "pflbench_app" / "spec.json").read_text()))
    assert spec.parallel_clients == 1  # a node trains its one client
    runner = Runner(resolve(spec), None, None)
    local = runner.run(0.0)
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
