"""Backends: the Ray backend gives the local backend's record (one client at a time; batched
within tolerance), on a multi-node cluster too, and a killed worker does not change it; a
client whose worker or device died is a lost update; bad choices are one line."""

from __future__ import annotations

import pytest
import torch

from pflbench.federation.engine import run


@pytest.mark.slow
@pytest.mark.parametrize("method,channel,codec", [
    ("pftt", "ideal", "fp32"),  # private LoRA kept by the server's store, travelling with each job
    ("scaffold-lora", "lte-cell-edge", "topk:0.25"),  # client and server state, messages, codec memory, lost updates
])
def test_ray_backend_gives_the_local_record(ray_session, small_spec, without_timing, one_thread, method, channel, codec):
    spec = small_spec(method=method, task="synth-world", channel=channel, codec=codec,
                      clients=4, clients_per_round=3, rounds=3, local_steps=2)
    with one_thread():  # parallel_clients 1: one client at a time, as each 1-thread worker
        local = run(spec)
    on_ray = run(spec, backend="ray", workers=2)
    assert without_timing(on_ray) == without_timing(local)
    rounds = local["rounds"]
    assert sum(r["uplink_bytes"] for r in rounds) > 0 and all(len(r["sampled"]) == 3 for r in rounds)
    if channel != "ideal":  # the lossy case really exercised a lost or late upload
        assert any(r["lost"] or r["late"] for r in rounds)


def test_a_client_whose_worker_died_is_a_lost_update_and_keeps_its_state(small_spec):
    """A backend that gets nothing back for a client (its device or worker died after the
    backend's retries): the run finishes, the update is lost (in ``lost``, with the reason in
    ``failed``), the method's aggregate is told, and the client's private tensors and
    participation stay as they were; the other clients' round is untouched."""
    from pflbench.federation.backends import LocalBackend
    from pflbench.federation.client import ClientOutcome
    from pflbench.federation.engine import Runner
    from pflbench.federation.resolve import resolve

    spec = small_spec(method="pftt", task="synth-world", clients=3, clients_per_round=3, rounds=2, local_steps=2)
    seen = []

    class Dying(LocalBackend):
        def train(self, jobs):
            for out in super().train(jobs):
                yield ClientOutcome.lost(out.client, "node 7 stopped answering") if (jobs[0].round, out.client) == (2, 1) else out

    exp = resolve(spec)
    aggregate = exp.method.aggregate
    exp.method.aggregate = lambda shared, updates, info: seen.append(info) or aggregate(shared, updates, info)
    runner = Runner(exp, None, None, Dying(exp))
    record = runner.run(0.0)
    r1, r2 = record["rounds"]
    assert r2["failed"] == [{"client": 1, "reason": "node 7 stopped answering"}] and "failed" not in r1
    assert 1 in r2["lost"] and 1 not in r2["delivered"] and seen[1].lost == [1] and seen[1].delivered == [0, 2]
    assert len(r2["links"]) == 2 and r2["uplink_bytes"] == r1["uplink_bytes"] * 2 // 3  # two uploads sent
    assert runner.participation == {0: 2, 1: 1, 2: 2}

    assert record["summary"]["lost_updates"] == 1 and len(r2["eval"]["clients"]) == 3
    # client 1 kept its round-1 private LoRA; the others trained on past round 1
    one_round = Runner(resolve(small_spec(method="pftt", task="synth-world", clients=3, clients_per_round=3, rounds=1,
                                          local_steps=2)), None, None)
    one_round.run(0.0)
    for name, t in runner.store.get(1).items():
        assert torch.equal(t, one_round.store.get(1)[name])
    assert not all(torch.equal(t, one_round.store.get(0)[n]) for n, t in runner.store.get(0).items())


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


@pytest.mark.slow
def test_ray_workers_batch_their_share_of_a_round(ray_session, small_spec, one_thread):
    """parallel_clients auto on Ray: each of 2 workers trains its contiguous share of the
    round's 4 clients in one pass; the record is the local batched run's within the batched
    tolerance (the passes group the clients differently)."""
    from test_batched import LOSS_RTOL

    spec = small_spec(method="pftt", task="synth-world", clients=6, clients_per_round=4, rounds=2, local_steps=3,
                      parallel_clients="auto")
    with one_thread():
        local = run(spec)
    on_ray = run(spec, backend="ray", workers=2)
    assert [r["sampled"] for r in on_ray["rounds"]] == [r["sampled"] for r in local["rounds"]]
    assert [r["uplink_bytes"] for r in on_ray["rounds"]] == [r["uplink_bytes"] for r in local["rounds"]]
    for a, b in zip(local["rounds"], on_ray["rounds"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_RTOL)
    assert on_ray["summary"]["score"] == pytest.approx(local["summary"]["score"], abs=1e-9)


def _kill_when_busy(title: str, found: list, stop) -> None:
    """Kill -9 the first process whose title starts with ``title`` (Ray names a worker after
    the task it is running: ``ray::_Worker.train``, ``ray::run_one``)."""
    import os
    import signal
    import subprocess
    import time

    while not stop.is_set() and not found:
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        for line in ps.splitlines():
            pid, _, args = line.strip().partition(" ")
            if args.startswith(title):
                time.sleep(0.5)  # well inside the task
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    found.append(int(pid))
                except ProcessLookupError:
                    continue
                return
        time.sleep(0.1)


@pytest.mark.slow
def test_a_ray_cluster_runs_a_run_and_a_sweep_and_survives_a_killed_worker(tmp_path, without_timing, one_thread):
    """A local cluster of two nodes (``ray.cluster_utils.Cluster``: a head and a worker node, as
    `ray start --head` and `ray start --address` make), driven by the CLI with --ray-address as a
    user would: a run whose worker is killed -9 mid-round is retried and gives the local record;
    a sweep whose run task is killed resumes it from its checkpoint, gives the local records,
    and started again runs nothing."""
    pytest.importorskip("ray", reason="pflbench[ray] is installed by make setup")
    import json
    import os
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from ray.cluster_utils import Cluster

    from pflbench.config import RunSpec

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        exe = str(Path(sys.executable).parent / "pflbench")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        flags = ["--method", "scaffold-lora", "--task", "synth-world", "--channel", "lte-cell-edge", "--clients", "4", "--clients-per-round", "3",
                 "--rounds", "3", "--local-steps", "6", "--batch-size", "4", "--parallel-clients", "1"]

        def killing(title, cmd):
            found, stop = [], threading.Event()
            killer = threading.Thread(target=_kill_when_busy, args=(title, found, stop))
            killer.start()
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
            finally:
                stop.set()
                killer.join()
            assert done.returncode == 0, done.stderr[-3000:]
            assert found, f"no {title} process was seen to kill"
            return done

        done = killing("ray::_Worker.train", [exe, "run", *flags, "--backend", "ray", "--ray-address", cluster.address,
                                              "--workers", "2", "--results-dir", str(tmp_path / "r"), "--json"])
        on_cluster = json.loads(done.stdout)
        with one_thread():
            local = run(RunSpec.from_dict(on_cluster["spec"]))
        assert not any("failed" in r for r in on_cluster["rounds"])  # retried, not lost
        assert without_timing(on_cluster) == without_timing(local)

        suite = tmp_path / "suite.yaml"
        suite.write_text("methods: [fedavg-lora, pftt]\ntasks: [synth-world]\nseeds: 0\nclients: 4\nclients_per_round: 2\n"
                         "rounds: 4\nlocal_steps: 6\nparallel_clients: 1\n")
        sweep = [exe, "sweep", str(suite), "--backend", "ray", "--ray-address", cluster.address,
                 "--results-dir", str(tmp_path / "s")]
        killing("ray::run_one", sweep)
        records = [json.loads(p.read_text()) for p in sorted((tmp_path / "s").glob("*/record.json"))]
        assert sorted(r["spec"]["method"] for r in records) == ["fedavg-lora", "pftt"]
        for rec in records:
            with one_thread():
                assert without_timing(rec) == without_timing(run(RunSpec.from_dict(rec["spec"])))
        again = subprocess.run(sweep, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert again.returncode == 0 and "2 runs: 2 done, 0 interrupted (resume), 0 to run" in again.stderr, again.stderr[-2000:]
    finally:
        cluster.shutdown()
