"""Backends: the Ray backend gives the local backend's record (one client at a time); bad
choices are one line."""

from __future__ import annotations

import pytest

from pflbench.federation.engine import run


@pytest.mark.slow
@pytest.mark.parametrize("method,channel,codec", [
    ("pftt", "ideal", "fp32"),  # private LoRA kept by the server's store, travelling with each job
    ("scaffold-lora", "lte-cell-edge", "topk:0.25"),  # client and server state, messages, codec memory, lost updates
])
def test_ray_backend_gives_the_local_record(ray_session, small_spec, without_timing, method, channel, codec):
    spec = small_spec(method=method, task="synth-world", channel=channel, codec=codec,
                      clients=4, clients_per_round=3, rounds=3, local_steps=2)
    local = run(spec)  # parallel_clients 1: a Ray worker trains one client at a time
    on_ray = run(spec, backend="ray", workers=2)
    assert without_timing(on_ray) == without_timing(local)
    rounds = local["rounds"]
    assert sum(r["uplink_bytes"] for r in rounds) > 0 and all(len(r["sampled"]) == 3 for r in rounds)
    if channel != "ideal":  # the lossy case really exercised a lost or late upload
        assert any(r["lost"] or r["late"] for r in rounds)


@pytest.mark.parametrize("args,message", [
    (["--backend", "spark"], "unknown --backend 'spark'"),
    (["--backend", "ray", "--workers", "0"], "--workers must be a positive integer"),
    (["--backend", "ray", "--workers", "1000000000"], "--workers 1000000000 is more than 1024 processes"),
    (["--workers", "2"], "--workers and --ray-address go with --backend ray"),
    # nobody listens on port 9 of this machine: one line within seconds, not Ray's minutes of retries
    (["--backend", "ray", "--ray-address", "127.0.0.1:9"], "--ray-address 127.0.0.1:9: nothing answers there"),
    (["--backend", "ray", "--ray-address", "ray://127.0.0.1:9"], "nothing answers there"),
    (["--backend", "ray", "--ray-address", "my-cluster"], "give HOST:PORT"),
])
def test_bad_backend_choices_are_one_line(cli, tmp_path, args, message):
    code, out, err = cli("run", "--results-dir", str(tmp_path), *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before a results folder was made


@pytest.mark.slow
def test_ray_workers_import_this_pflbench_from_a_folder_holding_a_pflbench_folder(tmp_path):
    """Run from a folder with a `pflbench/` folder in it (a user's notes, results): the actors
    put the working directory first on sys.path, and that folder used to shadow the editable
    install (ImportError inside every actor, a Ray traceback). Their PYTHONPATH now starts with
    this pflbench's parent."""
    import os
    import subprocess
    import sys

    (tmp_path / "pflbench").mkdir()
    (tmp_path / "pflbench" / "notes.txt").write_text("not a package")
    from pathlib import Path

    # the console script, as a user runs it (`python -m` would put the folder first in the driver too)
    cmd = [str(Path(sys.executable).parent / "pflbench"), "run", "--backend", "ray", "--workers", "1", "--clients", "2",
           "--clients-per-round", "1", "--rounds", "1", "--local-steps", "1", "--results-dir", str(tmp_path / "r"), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"uplink_bytes"' in done.stdout and list((tmp_path / "r").glob("*/record.json"))
