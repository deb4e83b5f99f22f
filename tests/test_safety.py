"""No finished result is ever lost, interrupted runs resume to the same record, one writer per
run, and a diverged run is a failure, not a score (issue 10)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pflbench.errors import UserError
from pflbench.federation.engine import run
from pflbench.results.record import CHECKPOINT, RunWriter, partial_dir, strip_timing

RUN = ["--clients", "4", "--clients-per-round", "2", "--local-steps", "2", "--batch-size", "4"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-round run in its results folder, and its record."""
    from pflbench.config import resolve_spec

    out = tmp_path_factory.mktemp("results")
    spec = resolve_spec(clients=4, clients_per_round=2, rounds=3, local_steps=2, batch_size=4, method="fedavg-lora", codec="topk:0.5")
    return out, spec, run(spec, out)


def test_a_finished_run_is_kept_and_not_run_again(finished, cli):
    out, spec, record = finished
    before = _snapshot(out / spec.run_id)
    code, stdout, err = cli("run", "--method", "fedavg-lora", "--codec", "topk:0.5", "--rounds", "3", *RUN,
                            "--results-dir", str(out), "--json")
    assert code == 0 and "finished earlier, kept" in err and "round 1/3" not in err
    assert json.loads(stdout) == json.loads(json.dumps(record))
    assert _snapshot(out / spec.run_id) == before


def test_a_failed_forced_rerun_leaves_the_finished_run_untouched_and_no_orphan(finished, cli):
    out, spec, _ = finished
    before = _snapshot(out / spec.run_id)
    code, _, err = cli("run", "--method", "fedavg-lora", "--codec", "topk:0.5", "--rounds", "3", *RUN,
                       "--results-dir", str(out), "--force", "--device", "cuda:7")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:")
    assert _snapshot(out / spec.run_id) == before
    assert not partial_dir(out, spec.run_id).exists()


def test_an_interrupted_run_resumes_to_the_uninterrupted_record(finished, tmp_path):
    """Stopped after each possible round, then run again: the same record (top-k's error
    feedback memory and the clients' private state come back from the checkpoint)."""
    _, spec, record = finished
    for stop_at in (1, 2):
        out = tmp_path / f"stop{stop_at}"

        def stop(rec, at=stop_at):
            if rec["round"] == at:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run(spec, out, on_round=stop)
        folder = partial_dir(out, spec.run_id)
        assert (folder / CHECKPOINT).exists() and not (out / spec.run_id).exists()
        assert [json.loads(l)["round"] for l in (folder / "rounds.jsonl").read_text().splitlines()] == list(range(1, stop_at + 1))
        resumed = run(spec, out)
        assert strip_timing(resumed) == strip_timing(record)
        assert not folder.exists() and (out / spec.run_id / "record.json").exists()
        assert [json.loads(l)["round"] for l in (out / spec.run_id / "rounds.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_one_writer_per_run_folder(tmp_path):
    first = RunWriter(tmp_path, "abc", {"x": 1})
    try:
        with pytest.raises(UserError, match="another pflbench process is running this spec"):
            RunWriter(tmp_path, "abc", {"x": 1})
    finally:
        first.close()
    RunWriter(tmp_path, "abc", {"x": 1}).close()  # released


def test_a_diverged_run_is_an_error_not_a_score(cli, tmp_path):
    code, out, err = cli("run", "--method", "fedavg-lora", "--lr", "1e9", "--rounds", "2", *RUN, "--results-dir", str(tmp_path))
    assert code == 2 and out == "" and err.strip().splitlines()[-1].startswith("error: the run diverged: round 1, client")
    assert not list(tmp_path.rglob("record.json"))


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_non_finite_or_non_positive_learning_rates_are_refused(cli, tmp_path, value):
    code, _, err = cli("run", "--lr", value, *RUN, "--results-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "--lr must be a positive finite number" in err
    assert not any(tmp_path.iterdir())


def _pflbench(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "pflbench.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "no checkpoint appeared"
        time.sleep(0.05)


KILL_ARGS = ["run", "--method", "pftt", "--rounds", "6", "--clients", "4", "--clients-per-round", "2", "--local-steps", "6",
             "--batch-size", "4", "--json"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run([sys.executable, "-m", "pflbench.cli", *KILL_ARGS, "--results-dir", str(out)], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("how, delay", [(signal.SIGKILL, 0.0), (signal.SIGKILL, 0.5), (signal.SIGTERM, 0.3)])
def test_killed_at_any_moment_the_same_command_finishes_with_the_same_record(tmp_path, uninterrupted, how, delay):
    """kill -9 right after a checkpoint and part-way into a later round, and SIGTERM (handled
    as Ctrl-C); then the same command resumes and ends with the uninterrupted record."""
    out = tmp_path / "killed"
    proc = _pflbench(*KILL_ARGS, "--results-dir", str(out))
    _wait_for(partial_dir(out, uninterrupted["run_id"]) / CHECKPOINT, proc)
    time.sleep(delay)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    assert not (out / uninterrupted["run_id"]).exists(), "the run finished before the signal: lengthen it"
    if how == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted: finished rounds are kept" in err, (proc.returncode, err)
    again = _pflbench(*KILL_ARGS, "--results-dir", str(out))
    stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming the interrupted run" in err
    assert strip_timing(json.loads(stdout)) == strip_timing(uninterrupted)
