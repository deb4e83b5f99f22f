"""Shared fixtures. Tests never reach a hub; the tiny model is built once per cache
(``PFLBENCH_CACHE`` or the user cache) and then reloads in well under a second."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys
from dataclasses import replace

import pytest

from pflbench.config import RunSpec

# Small enough for seconds per run on 2 cores, big enough that every code path runs.
SMALL = RunSpec(clients=4, clients_per_round=2, rounds=2, local_steps=2, batch_size=4)


@pytest.fixture
def small_spec():
    def make(**changes) -> RunSpec:
        return replace(SMALL, **changes)

    return make


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the real CLI entry point in-process: returns (exit code, stdout, stderr)."""
    from pflbench.cli import main

    def call(*args: str):
        monkeypatch.setattr(sys, "argv", ["pflbench", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        out = capsys.readouterr()
        return exc.value.code, out.out, out.err

    return call


@pytest.fixture
def register(monkeypatch):
    """Make a method class defined in a test resolvable by name, as an installed plugin is."""
    from pflbench import registry
    from pflbench.registry import Entry

    def add(cls):
        monkeypatch.setitem(registry.methods.entries(), cls.name, Entry(cls.name, lambda: cls, f"tests:{cls.__name__}", "tests"))
        return cls

    return add


@pytest.fixture(scope="session")
def ray_session():
    """Ray on this machine (2 CPUs), started once for the tests that need it."""
    ray = pytest.importorskip("ray", reason="pflbench[ray] is installed by make setup")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def without_timing():
    """A record with what only timing and the backend change taken out (wall time, each
    round's timings, a Flower run's transport bytes), as JSON would hold it: for comparing runs
    of the same spec on different backends."""
    import json

    def strip(record: dict) -> dict:
        out = dict(record, summary={k: v for k, v in record["summary"].items() if k != "wall_s"})
        out["rounds"] = [{k: v for k, v in r.items() if k not in ("timing", "transport")} for r in record["rounds"]]
        return json.loads(json.dumps(out, sort_keys=True))

    return strip


@pytest.fixture
def one_thread():
    """A context on one torch thread, for a local reference run beside workers that train on
    one thread each (Ray workers, Flower ClientApps of one CPU): the order of a matrix product's
    floating-point sums follows the threads (2 threads moved a train loss in its 8th digit and
    LoRA weights by 5e-7)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def on_one():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    return on_one

