import json
import subprocess
import sys

import pytest
import torch

SMALL_FLAGS = ["--clients", "4", "--clients-per-round", "2", "--rounds", "2", "--local-steps", "2", "--batch-size", "4"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "--method", "nope"], "unknown method 'nope'; choose one of: central, ditto, fedavg-full, fedavg-lora, feddpa, fedper-lora, fedprox, fedrep-lora, fedsa-lora, ffa-lora, local-only, pfit, pftt, scaffold-lora"),
        (["run", "--task", "nope"], "unknown task 'nope'"),
        (["run", "--channel", "moon"], "unknown channel 'moon'; choose one of: 5g-uma, aircomp-noisy, chen2020, ideal, lte-cell-edge"),
        (["run", "--codec", "fp64"], "unknown codec 'fp64'"),
        (["run", "--model", "no/such-model-here"], "cannot load model 'no/such-model-here'"),
        (["run", "--clients", "0"], "--clients must be a positive integer"),
        (["run", "--rounds", "-1"], "--rounds must be a positive integer"),
        (["run", "--clients", "3", "--clients-per-round", "4"], "cannot exceed --clients (3)"),
        (["run", "--clients", "abc"], "Invalid value for '--clients'"),
        (["run", "--bogus-flag"], "--bogus-flag"),  # click's wording differs across the typer versions flwr allows
        (["run", "--opt", "rank"], "--opt expects KEY=VALUE"),
        (["run", "--opt", "depth=3"], "unknown option(s) depth for method 'fedavg-lora'; valid: rank, alpha, targets"),
        (["run", "--opt", "rank=eight"], "not a valid int"),
        (["run", "--results-dir", "/proc/pflbench-cannot-write"], "cannot write results to /proc/pflbench-cannot-write"),
        (["list", "planets"], "'planets' is not one of"),
        (["table", "/nonexistent-results"], "is not a folder of run records"),
        (["run", "--clients", "500"], "--clients 500 is too many"),
        (["run", "--device", "tpu"], "unknown --device 'tpu'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, needle):
    code, out, err = cli(*args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert needle in err
    assert "Traceback" not in err


def test_a_bad_name_leaves_no_results_folder(cli, tmp_path):
    code, _, _ = cli("run", "--method", "nope", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message for machines without CUDA")
def test_cuda_without_a_gpu_is_one_line(cli):
    code, _, err = cli("run", "--device", "cuda")
    assert code == 2 and err == "error: --device cuda asked for, but no CUDA device is available; use --device cpu\n"


def test_run_prints_summary_table_and_progress(cli, tmp_path):
    code, out, err = cli("run", "--method", "fedavg-lora", *SMALL_FLAGS, "--results-dir", str(tmp_path))
    assert code == 0
    assert "round 1/2" in err and "round 2/2" in err
    assert out.startswith("### shakespeare-roles (score: next-token-accuracy, points")
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    for col in ("method", "score", "Δ base", "pers. gain", "uplink"):
        assert col in header
    assert "fedavg-lora" in out and "196.67 kB" in out  # 2 rounds x 2 clients x (12288 x 4 + 16) bytes


def test_run_json_prints_only_the_record(cli, tmp_path):
    code, out, err = cli("run", "--method", "local-only", *SMALL_FLAGS, "--results-dir", str(tmp_path), "--json")
    assert code == 0
    record = json.loads(out)  # the whole of stdout is one JSON document
    assert record["spec"]["method"] == "local-only" and record["summary"]["uplink_bytes"] == 0
    assert (tmp_path / record["run_id"] / "record.json").exists()


def test_bench_and_table_show_every_method(cli, tmp_path):
    code, out, _ = cli("bench", "--methods", "local-only,fedavg-lora", *SMALL_FLAGS, "--results-dir", str(tmp_path))
    assert code == 0
    assert "local-only" in out and "fedavg-lora" in out
    assert (tmp_path / "leaderboard.md").read_text().strip() == out.strip()
    code, again, _ = cli("table", str(tmp_path))
    assert code == 0 and again.strip() == out.strip()


@pytest.mark.parametrize("what, names", [
    ("methods", ["local-only", "fedavg-lora", "fedavg-full", "pftt", "pfit"]),
    ("tasks", ["shakespeare-roles"]),
    ("channels", ["ideal", "wifi-indoor", "5g-uma", "lte-cell-edge", "rural-rma", "chen2020", "aircomp-noisy"]),
    ("models", ["tiny", "smollm2-135m"]),
])
def test_list_shows_registered_components_with_descriptions(cli, what, names):
    code, out, _ = cli("list", what, "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    for name in names:
        assert name in rows and rows[name]["description"]


def test_console_script_exits_2_without_traceback():
    """The installed `pflbench` entry point itself, in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "pflbench.cli", "run", "--method", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: unknown method 'nope'; choose one of: central, ditto, fedavg-full, fedavg-lora, feddpa, fedper-lora, fedprox, fedrep-lora, fedsa-lora, ffa-lora, local-only, pfit, pftt, scaffold-lora"]
