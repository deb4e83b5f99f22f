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
from pflbench.results.record import CHECKPOINT, RunWriter, load_records, partial_dir, strip_timing

RUN = ["--clients", "4", "--clients-per-round", "2", "--local-steps", "2", "--batch-size", "4"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-round run in its results folder, and its record."""
    from pflbench.federation.resolve import resolve_spec

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


KILL_ARGS = ["run", "--method", "pftt", "--rounds", "20", "--clients", "4", "--clients-per-round", "2", "--local-steps", "6",
             "--batch-size", "4", "--json"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run([sys.executable, "-m", "pflbench.cli", *KILL_ARGS, "--results-dir", str(out)], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return json.loads(done.stdout)


def _rounds_done(folder: Path) -> int:
    try:
        return len((folder / "rounds.jsonl").read_text().splitlines())
    except OSError:
        return 0


@pytest.mark.parametrize("how, after, delay", [(signal.SIGKILL, 1, 0.0), (signal.SIGKILL, 3, 0.03), (signal.SIGTERM, 2, 0.0)])
def test_killed_at_any_moment_the_same_command_finishes_with_the_same_record(tmp_path, uninterrupted, how, after, delay):
    """kill -9 right after a round's checkpoint and a moment into the next round, and SIGTERM
    (handled as Ctrl-C); then the same command resumes and ends with the uninterrupted record."""
    out = tmp_path / "killed"
    folder = partial_dir(out, uninterrupted["run_id"])
    proc = _pflbench(*KILL_ARGS, "--results-dir", str(out))
    end = time.time() + 120
    while _rounds_done(folder) < after:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "no round finished"
        time.sleep(0.005)
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


def test_table_skips_bad_records_with_a_warning_and_refuses_unknown_formats(finished, cli, tmp_path):
    import shutil

    out, spec, _ = finished
    shutil.copytree(out / spec.run_id, tmp_path / "good")
    for name, content in (("shape", b'{"schema": "pflbench.run/1", "run_id": 3}'), ("latin1", "caf\xe9".encode("latin-1")),
                          ("truncated", (out / spec.run_id / "record.json").read_bytes()[:200])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "record.json").write_bytes(content)
    code, table, err = cli("table", str(tmp_path))
    assert code == 0 and "fedavg-lora" in table
    warnings = err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("warning: skipped") for w in warnings)
    assert any("shape" in w and "run_id" in w for w in warnings) and any("latin1" in w and "UTF-8" in w for w in warnings)
    code, _, err = cli("table", str(tmp_path), "--format", "xml")
    assert code == 2 and err.count("\n") == 1 and "is not a table format" in err
    # a score of NaN, Infinity or true (hand-edited, or another tool's) is skipped, not shown as nan ± nan
    good = (tmp_path / "good" / "record.json").read_text()
    score = f'"score": {json.loads(good)["summary"]["score"]!r}'
    assert score in good
    for name, value in (("nan", "NaN"), ("inf", "Infinity"), ("bool", "true")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "record.json").write_text(good.replace(score, f'"score": {value}'))
    code, table, err = cli("table", str(tmp_path))
    assert code == 0 and "nan" not in table and err.count("warning: skipped") == 6, err
    assert all(f"skipped {tmp_path / n / 'record.json'}" in err for n in ("nan", "inf", "bool"))
    # a record, a card or a suite that is a link to /dev/zero is refused, not read without end
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "record.json").symlink_to("/dev/zero")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    code, table, err = cli("table", str(tmp_path))
    assert code == 0 and f"skipped {tmp_path / 'zero' / 'record.json'}: not a regular file" in err
    for command in (("task", "show"), ("sweep",)):
        code, _, err = cli(*command, str(tmp_path / "zero.yaml"))
        assert code == 2 and "is not a regular file" in err and err.count("\n") == 1, err


def test_an_unwritable_leaderboard_is_one_line_and_the_runs_are_kept(finished, cli):
    out, spec, _ = finished
    (out / "leaderboard.md").mkdir()
    try:
        code, _, err = cli("bench", "--methods", "fedavg-lora", "--codec", "topk:0.5", "--rounds", "3", *RUN,
                           "--results-dir", str(out))
    finally:
        (out / "leaderboard.md").rmdir()
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: cannot write {out / 'leaderboard.md'}")
    assert (out / spec.run_id / "record.json").exists()


def test_a_corrupted_model_cache_names_the_folder_to_delete(cli, tmp_path, monkeypatch):
    import shutil

    from pflbench.models import cache_dir

    shutil.copytree(cache_dir() / "tiny-v1", tmp_path / "tiny-v1")
    weights = tmp_path / "tiny-v1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    monkeypatch.setenv("PFLBENCH_CACHE", str(tmp_path))
    code, _, err = cli("run", *RUN, "--results-dir", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and f"{tmp_path / 'tiny-v1'}" in err and "delete that folder" in err


@pytest.mark.parametrize("flags, words", [
    (["--task", "synth-classify", "--clients", "1000000000", "--clients-per-round", "2"], "at most 1500 clients"),
    (["--batch-size", "1000000000000"], "--batch-size 1000000000000 is beyond"),
])
def test_impossible_sizes_fail_fast(cli, tmp_path, flags, words):
    code, _, err = cli("run", *flags, "--results-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and words in err, err


SYNTH = {"name": "bad", "kind": "task", "description": "d", "source": {"generator": "synth-classify", "examples": 200},
         "text": "{text}", "partition": {"iid": {}}, "metric": "next-token-accuracy"}


@pytest.mark.parametrize("change, words", [
    ({"partition": {"dirichlet": {"key": "topic", "alpha": -1}}}, "alpha: Input should be greater than 0"),
    ({"partition": {"dirichlet": {"key": "topic", "alpha": 0}}}, "alpha: Input should be greater than 0"),
    ({"partition": {"dirichlet": {"key": "topic", "alpha": "abc"}}}, "alpha: Input should be a valid number"),
    ({"partition": {"shards": {"key": "topic", "per_client": 0}}}, "per_client: Input should be greater than or equal to 1"),
    ({"partition": {"quantity-skew": {"exponent": -2}}}, "exponent: Input should be greater than 0"),
    ({"partition": {"iid": {"bogus": 1}}}, "bogus: Extra inputs are not permitted"),
    ({"test_fraction": "abc"}, "test_fraction: Input should be a valid number"),
    ({"labels": 5, "metric": "label-accuracy"}, "labels: Input should be a valid list"),
    ({"text": "{0}"}, "positional field {0}"),
    ({"text": "{text"}, "is not a valid template"),
])
def test_bad_task_cards_are_one_line_naming_the_field(cli, tmp_path, change, words):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**SYNTH, **change}))
    code, out, err = cli("task", "show", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error:"), err
    assert words in err and "bad.yaml" in err, err


def test_unreadable_cards_and_data_files_are_one_line(cli, tmp_path):
    import yaml

    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty-data.yaml").write_text(yaml.safe_dump({**SYNTH, "source": {"file": "empty.jsonl"}}))
    (tmp_path / "bomb.yaml").write_text("n0: &n0 [x, x]\n" + "".join(f"n{i + 1}: &n{i + 1} [*n{i}, *n{i}]\n" for i in range(40)))
    (tmp_path / "huge.yaml").write_text("x: " + "y" * 300_000)
    for name, words in (("dir.yaml", "is a directory"), ("binary.yaml", "not UTF-8"), ("empty-data.yaml", "is empty"),
                        ("bomb.yaml", "aliases"), ("huge.yaml", "larger than")):
        code, _, err = cli("task", "show", str(tmp_path / name))
        assert code == 2 and err.count("\n") == 1 and words in err, (name, err)


@pytest.mark.parametrize("change, words", [
    ({"bandwidth": {"total_hz": 1e7, "share": 0}}, "bandwidth.share: Input should be greater than 0"),
    ({"bandwidth": {"per_client_hz": -5}}, "bandwidth.per_client_hz: Input should be greater than 0"),
    ({"deadline_s": 0}, "deadline_s: Input should be greater than 0 s"),
    ({"deadline_s": -3}, "deadline_s: Input should be greater than 0 s"),
    ({"eta": -1}, "eta: Input should be greater than 0"),
    ({"se_max": 0}, "se_max: Input should be greater than 0 bit/s/Hz"),
    ({"p_tx_dbm": ".inf"}, "must be a number"),
    ({"p_tx_dbm": float("inf")}, "must be a finite number"),
    ({"p_tx_dbm": 3113}, "p_tx_dbm: Input should be less than or equal to 60 dBm"),
])
def test_bad_channel_cards_are_one_line(cli, tmp_path, change, words):
    import yaml

    from pflbench.channel.cards import resolve_channel

    card = yaml.safe_load(open(resolve_channel("lte-cell-edge").card))
    path = tmp_path / "bad-channel.yaml"
    path.write_text(yaml.safe_dump({**card, **change}))
    code, _, err = cli("channel", "show", str(path))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and words in err, err


def test_the_run_id_covers_versions_code_data_and_device(tmp_path, monkeypatch):
    import hashlib
    import inspect

    from pflbench import __version__, registry
    from pflbench.federation.resolve import resolve_spec

    spec = resolve_spec(method="fedavg-lora")
    module = Path(inspect.getfile(registry.methods.get("fedavg-lora")))
    assert spec.provenance["pflbench"] == __version__
    assert spec.provenance["method"].startswith("pflbench==") and hashlib.sha256(module.read_bytes()).hexdigest()[:12] in spec.provenance["method"]
    assert resolve_spec(method="fedavg-lora", device="cuda").run_id != spec.run_id
    ids = set()
    for content in ('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": "\\n\\nHuman: a\\n\\nAssistant: c"}\n',
                    '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: d", "rejected": "\\n\\nHuman: a\\n\\nAssistant: c"}\n'):
        (tmp_path / "hh-rlhf.jsonl").write_text(content * 50)
        monkeypatch.setenv("PFLBENCH_DATA_DIR", str(tmp_path))
        with_copy = resolve_spec(task="hh-rlhf")
        assert with_copy.provenance["data"].startswith("file:")
        ids.add(with_copy.run_id)
    assert len(ids) == 2  # another copy of the data, another run


def test_a_broken_jsonl_line_is_one_line_naming_it(cli, tmp_path):
    import yaml

    rows = [json.dumps({"question": f"q{i}", "answer": f"a{i}"}) for i in range(40)]
    rows[17] = '{"question": "broken'
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    card = {"name": "jl", "kind": "instruction", "description": "d", "source": {"file": "d.jsonl"}, "prompt": "{question}",
            "reference": " {answer}", "partition": {"iid": {}}, "metric": "exact-match"}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    code, _, err = cli("task", "show", str(tmp_path / "card.yaml"))
    assert code == 2 and err.count("\n") == 1 and "line 18 is not valid JSON" in err, err


def test_a_full_disk_at_the_end_is_one_line_and_keeps_the_finished_rounds(cli, tmp_path, monkeypatch):
    import errno

    import pflbench.results.record as record_module

    real = record_module.atomic_write

    def full(path, text):
        if path.name == "record.json":
            (path.with_suffix(".json.tmp")).write_text(text[: len(text) // 2])  # what a full disk leaves
            (path.with_suffix(".json.tmp")).unlink()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(record_module, "atomic_write", full)
    code, _, err = cli("run", "--rounds", "2", *RUN, "--results-dir", str(tmp_path))
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: cannot write the finished record")
    assert "No space left on device" in err
    partial = next(tmp_path.glob("*.partial"))
    assert (partial / CHECKPOINT).exists() and not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(record_module, "atomic_write", real)
    code, _, err = cli("run", "--rounds", "2", *RUN, "--results-dir", str(tmp_path))
    assert code == 0 and "resuming" in err and not partial.exists()


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_rounds_before(cli, tmp_path, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError, not an OSError: one line
    naming the round, and the round before it kept for the resume."""
    import safetensors.torch
    from safetensors import SafetensorError

    real, calls = safetensors.torch.save_file, []

    def full_at_round_2(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_at_round_2)
    code, _, err = cli("run", "--rounds", "3", *RUN, "--results-dir", str(tmp_path))
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: cannot write the checkpoint of round 2") and "No space left" in last, err
    assert "Traceback" not in err
    partial = next(tmp_path.glob("*.partial"))
    assert (partial / CHECKPOINT).exists() and len((partial / "rounds.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    code, _, err = cli("run", "--rounds", "3", *RUN, "--results-dir", str(tmp_path))
    assert code == 0 and "resuming" in err


def test_a_name_too_long_for_the_file_system_is_one_line(cli, tmp_path):
    """A results folder or card name with a 300-character component (ENAMETOOLONG)."""
    long = tmp_path / ("x" * 300)
    for args in (("run", *RUN, "--results-dir", str(long)), ("task", "show", str(long) + ".yaml"),
                 ("table", str(long))):
        code, _, err = cli(*args)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        assert "too long" in err or "not a folder" in err or "does not exist" in err, (args, err)


def test_a_publish_cut_short_by_a_kill_is_mended_not_run_again(finished, cli, tmp_path):
    """`--force` publishes by renaming the old run to RUN_ID.replaced, then the new one into
    place; a kill -9 between the two renames left no RUN_ID, and the next command trained again.
    Now: a new run that had finished is published; one that had not brings the old run back."""
    import shutil

    out, spec, record = finished
    args = ["run", "--method", "fedavg-lora", "--codec", "topk:0.5", "--rounds", "3", *RUN, "--json"]
    for new_finished in (True, False):
        where = tmp_path / f"new-finished-{new_finished}"
        shutil.copytree(out / spec.run_id, where / f"{spec.run_id}.replaced")  # the old run, renamed aside
        part = partial_dir(where, spec.run_id)
        part.mkdir()
        (part / "lock").touch()
        if new_finished:
            shutil.copy(out / spec.run_id / "record.json", part / "record.json")
        else:
            (part / "rounds.jsonl").write_text("")
        assert load_records(where) == []  # neither half-published folder is read as a result
        code, stdout, err = cli(*args, "--results-dir", str(where))
        assert code == 0 and "finished earlier, kept" in err and "round 1/3" not in err
        assert json.loads(stdout)["run_id"] == spec.run_id
        assert (where / spec.run_id / "record.json").exists() and not (where / f"{spec.run_id}.replaced").exists()
        assert part.exists() != new_finished  # an unfinished new attempt stays, to resume under --force
