"""pflbench sweep: suite files, the grid they describe, and a sweep stopped at any moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pflbench.errors import UserError
from pflbench.results.record import load_records, strip_timing
from pflbench.orchestration.sweep import expand, load_suite

SUITE = """
methods: [fedavg-lora, local-only]
tasks: [synth-world]
channels: [ideal, lte-cell-edge]
seeds: 0-1
rounds: 2
clients: 4
clients_per_round: 2
local_steps: 2
overrides:
  methods:
    local-only: {opt: {rank: 4}, local_steps: 3}
  tasks:
    synth-world: {lr: 0.02}
"""


def _suite(tmp_path: Path, text: str = SUITE, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_suite_is_the_product_of_its_lists_with_overrides_applied(tmp_path):
    specs = expand(load_suite(_suite(tmp_path)))
    assert len(specs) == 2 * 2 * 2 and len({s.run_id for s in specs}) == 8
    assert {(s.method, s.channel, s.seed) for s in specs} == {(m, c, x) for m in ("fedavg-lora", "local-only")
                                                              for c in ("ideal", "lte-cell-edge") for x in (0, 1)}
    for s in specs:
        assert (s.rounds, s.clients, s.clients_per_round, s.lr) == (2, 4, 2, 0.02)
        assert (s.local_steps, s.method_options) == ((3, {"rank": "4"}) if s.method == "local-only" else (2, {}))


def test_per_model_overrides_sit_between_the_task_and_the_method(tmp_path):
    """A model's own learning rate (real models want smaller ones) over the task's, under the
    method's; a suite overriding a model it does not run is one line."""
    text = SUITE.replace("  tasks:\n", "  models:\n    tiny: {lr: 0.005}\n  tasks:\n").replace(
        "methods:\n    local-only:", "methods:\n    fedavg-lora: {lr: 0.0001}\n    local-only:") + "models: [tiny]\n"
    specs = expand(load_suite(_suite(tmp_path, text)))
    assert {s.method: s.lr for s in specs} == {"fedavg-lora": 0.0001, "local-only": 0.005}
    with pytest.raises(UserError, match="overrides model 'smollm2-135m', which is not in its models"):
        expand(load_suite(_suite(tmp_path, text.replace("tiny: {lr", "smollm2-135m: {lr"))))


def test_excluded_combinations_are_left_out_of_the_grid(tmp_path):
    """exclude: a run is left out when it matches every axis an entry names; the rest of the
    grid, and every other run's id, is as without it."""
    whole = expand(load_suite(_suite(tmp_path)))
    text = SUITE + "exclude:\n  - {methods: local-only, seeds: 1}\n  - {methods: [fedavg-lora], tasks: synth-world, seeds: 0-1}\n"
    left = expand(load_suite(_suite(tmp_path, text)))
    assert {(s.method, s.channel, s.seed) for s in left} == {("local-only", c, 0) for c in ("ideal", "lte-cell-edge")}
    assert {s.run_id for s in left} <= {s.run_id for s in whole}
    with pytest.raises(UserError, match="excludes method 'fedprox', which is not in its methods"):
        expand(load_suite(_suite(tmp_path, SUITE + "exclude: [{methods: fedprox}]\n")))
    with pytest.raises(UserError, match="exclude.0.metod: Extra inputs are not permitted"):
        load_suite(_suite(tmp_path, SUITE + "exclude: [{metod: fedprox}]\n"))


@pytest.mark.parametrize("text, needle", [
    ("methods: [fedavg-lora]\nrounds: two\n", "rounds: Input should be a valid integer"),
    ("methods: [fedavg-lora]\nrouns: 2\n", "rouns: Extra inputs are not permitted"),
    ("methods: [nope]\n", "unknown method 'nope'"),
    ("methods: [fedavg-lora]\ntasks: [synth-world]\noverrides: {tasks: {synth-align: {lr: 0.1}}}\n", "overrides task 'synth-align', which is not in its tasks"),
    ("methods: [fedavg-lora]\nseeds: 3-1\n", "not a range of non-negative seeds"),
    ("- a\n- b\n", "a suite file is a mapping"),
    ("methods: [fedavg-lora]\nclients: 2\nclients_per_round: 3\n", "cannot exceed --clients"),
    ("methods: [fedavg-lora]\nlr: true\n", "lr: Value error, must be a number, not true or false"),  # not lr 1.0
    ("methods: [fedavg-lora]\nseeds: 0-99999999999\n", "more than 10,000 seeds"),  # refused before it is built
    ("methods: [fedavg-lora]\nparallel_clients: 0\n", "parallel_clients: Value error, must be a positive integer or auto"),
    ("methods: [fedavg-lora]\nchannels: [idael]\n", "unknown channel 'idael'"),  # in the plan, not when the run is reached
    ("methods: [fedavg-lora]\ncodecs: [fp33]\n", "fp33"),
    ("methods: [fedavg-lora]\nmodels: [tiny, gpt5]\n", "unknown model 'gpt5'"),
    ("methods: [fedavg-lora]\nopt: {rnak: 4}\n", "unknown option(s) rnak for method 'fedavg-lora'"),
])
def test_suite_mistakes_are_one_line_naming_the_field(cli, tmp_path, text, needle):
    code, out, err = cli("sweep", str(_suite(tmp_path, text)), "--results-dir", str(tmp_path / "r"), "--dry-run")
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_dry_run_lists_each_run_with_its_status_and_an_estimate_from_earlier_runs(cli, tmp_path):
    suite = _suite(tmp_path, SUITE.replace("channels: [ideal, lte-cell-edge]", "channels: [ideal]"))
    code, out, _ = cli("sweep", str(suite), "--results-dir", str(tmp_path / "r"), "--dry-run")
    assert code == 0 and out.count(" todo") == 4 and "4 runs: 0 done, 0 interrupted (resume), 4 to run" in out
    assert not (tmp_path / "r").exists()
    code, out, err = cli("sweep", str(suite), "--results-dir", str(tmp_path / "r"))
    assert code == 0 and err.count("] score ") == 4 and (tmp_path / "r" / "leaderboard.md").exists()
    bigger = _suite(tmp_path, SUITE.replace("channels: [ideal, lte-cell-edge]", "channels: [ideal]").replace("rounds: 2", "rounds: 4"), "bigger.yaml")
    code, out, _ = cli("sweep", str(bigger), "--results-dir", str(tmp_path / "r"), "--dry-run")
    assert code == 0 and out.count(" todo") == 4 and "nothing to estimate from" not in out  # estimated from the rounds-2 runs
    code, out, _ = cli("sweep", str(suite), "--results-dir", str(tmp_path / "r"), "--dry-run")
    assert out.count("  done ") == 4 and "4 runs: 4 done" in out


def _sweep(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pflbench.cli", "sweep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_a_sweep_killed_and_started_again_runs_nothing_twice_and_loses_nothing(tmp_path):
    """Reference: the whole sweep. Then the same sweep with --jobs 2, killed
    (kill -9 on the whole process group) once a run has finished, and started again: the
    same records, and the runs finished before the kill are untouched."""
    suite = _suite(tmp_path, SUITE.replace("rounds: 2", "rounds: 6"))
    # every sweep here with --jobs 2: each run on one torch thread, as the killed sweep's workers
    # (the order of float sums follows the threads)
    ref = _sweep(str(suite), "--results-dir", str(tmp_path / "ref"), "--jobs", "2")
    assert ref.wait(timeout=600) == 0, ref.communicate()
    expected = {r["run_id"]: strip_timing(r) for r in load_records(tmp_path / "ref")}
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pflbench.cli", "sweep", str(suite), "--results-dir", str(out), "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    end = time.time() + 300
    while not list(out.glob("*/record.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end
        time.sleep(0.01)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/record.json")}
    assert 0 < len(finished) < len(expected), "the sweep finished before the kill: lengthen it"
    again = _sweep(str(suite), "--results-dir", str(out), "--jobs", "2")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert err.count("(kept)") == len(finished)  # not run again
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/record.json") if p.parent.name in finished} == finished
    got = {r["run_id"]: strip_timing(r) for r in load_records(out)}
    assert got == expected and not list(out.glob("*.partial"))
    for run_id in expected:  # one line per round: nothing appended twice
        assert len((out / run_id / "rounds.jsonl").read_text().splitlines()) == 6


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_killed_or_interrupted_sweep_takes_its_workers_with_it(tmp_path):
    """kill -9 of the sweep alone (not its process group): its pool workers die with it
    rather than running the rest of the grid. Ctrl-C: exit 130 at once, the queued runs
    dropped, not run first."""
    suite = _suite(tmp_path, SUITE.replace("rounds: 2", "rounds: 6"))
    for how in (signal.SIGKILL, signal.SIGINT):
        out = tmp_path / how.name
        # Ctrl-C as a terminal gives it, even where this test runs in the background of a shell,
        # which starts its children with SIGINT ignored (Python then never raises KeyboardInterrupt)
        proc = subprocess.Popen([sys.executable, "-m", "pflbench.cli", "sweep", str(suite), "--results-dir", str(out), "--jobs", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        end = time.time() + 300
        while not list(out.glob("*.partial/rounds.jsonl")):  # a worker is inside a run
            assert proc.poll() is None, proc.communicate()
            assert time.time() < end
            time.sleep(0.05)
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert workers
        started = time.time()
        proc.send_signal(how)
        code = proc.wait(timeout=60)
        if how is signal.SIGINT:
            assert code == 130 and time.time() - started < 30, proc.stderr.read()
        finished = len(list(out.glob("*/record.json")))
        while any(_alive(w) for w in workers) and time.time() - started < 20:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), f"{how.name}: workers outlived the sweep"
        time.sleep(1)
        assert len(list(out.glob("*/record.json"))) == finished  # nothing ran on after it


@pytest.mark.parametrize("suite", sorted((Path(__file__).resolve().parents[1] / "leaderboard" / "suites").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_suite_expands(suite, monkeypatch):
    """quick, full and smollm2 parse, name only installed methods, tasks and channels, and give
    the grid they describe (the smollm2 suite asks for cuda, which resolves without a GPU)."""
    s = load_suite(suite)
    specs = expand(s)
    from pflbench.orchestration.sweep import method_names, seeds_of

    grid = (len(method_names(s)) * len(s.tasks) * len(s.channels) * len(s.schedulers) * len(s.codecs) * len(s.dps) * len(s.models)
            * len(seeds_of(s.seeds)))
    full = expand(s.model_copy(update={"exclude": []})) if s.exclude else specs
    assert len(full) == grid
    assert [sp.run_id for sp in specs] == [sp.run_id for sp in full  # exclude drops the runs it matches, no other
                                           if not any(e.matches(sp.method, sp.task, sp.model, sp.seed) for e in s.exclude)]
    assert len({sp.run_id for sp in specs}) == len(specs)


def test_a_suite_sets_how_many_clients_train_together(tmp_path):
    """Batched by default (the full board, the demo and quick all are); a suite may pin one client
    at a time or a number; anything else is one clear line."""
    root = Path(__file__).resolve().parents[1] / "leaderboard" / "suites"
    assert {sp.parallel_clients for sp in expand(load_suite(root / "board.yaml"))} == {"auto"}
    card = tmp_path / "one.yaml"
    card.write_text("methods: [fedavg-lora]\ntasks: [synth-world]\nparallel_clients: 1\n")
    assert [sp.parallel_clients for sp in expand(load_suite(card))] == [1]
    assert {sp.parallel_clients for sp in expand(load_suite(root / "demo.yaml"))} == {"auto"}
    assert {sp.parallel_clients for sp in expand(load_suite(root / "quick.yaml"))} == {"auto"}
    card = tmp_path / "s.yaml"
    card.write_text("methods: [fedavg-lora]\ntasks: [synth-world]\nparallel_clients: 3\n")
    assert [sp.parallel_clients for sp in expand(load_suite(card))] == [3]
    card.write_text("methods: [fedavg-lora]\ntasks: [synth-world]\nparallel_clients: many\n")
    with pytest.raises(UserError, match="parallel_clients"):
        load_suite(card)
