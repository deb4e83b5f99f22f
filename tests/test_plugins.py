"""A method from a separately installed package, found through its entry point."""

import json
import os
import subprocess
import sys
import textwrap

PLUGIN = '''
from dataclasses import dataclass

from pflbench.methods import Method, Parts
from pflbench.models.adapters import add_lora


class HalfLoRA(Method):
    """Shares the LoRA of the query projections, keeps the value ones private."""

    name = "half-lora"
    description = "query LoRA shared, value LoRA private"

    @dataclass(frozen=True)
    class Options:
        rank: int = 4

    def prepare(self, model):
        shared = add_lora(model, "q", self.options.rank, targets=("q_proj",))
        private = add_lora(model, "v", self.options.rank, targets=("v_proj",))
        return Parts(shared=shared, private=private)
'''


def _install(tmp_path, name: str, module: str, entry_points: str) -> str:
    src = tmp_path / f"src-{name}"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text(module)
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "0.1"
        [project.entry-points."pflbench.methods"]
    """) + entry_points)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True)
    return str(site)


def test_plugin_installed_with_pip_is_listed_and_runs(tmp_path):
    site = _install(tmp_path, "halflora", PLUGIN, 'half-lora = "halflora:HalfLoRA"\n')
    env = {**os.environ, "PYTHONPATH": site}
    cmd = [sys.executable, "-m", "pflbench.cli"]

    listed = subprocess.run(cmd + ["list", "methods", "--json"], env=env, capture_output=True, text=True, check=True)
    assert "half-lora" in {r["name"] for r in json.loads(listed.stdout)}

    ran = subprocess.run(cmd + ["run", "--method", "half-lora", "--opt", "rank=2", "--clients", "3", "--clients-per-round", "2",
                                "--rounds", "2", "--local-steps", "2", "--results-dir", str(tmp_path / "r"), "--json"],
                         env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    rec = json.loads(ran.stdout)
    # 4 layers x q x (A: 2x96 + B: 96x2) shared; the same for v, private
    assert rec["model"]["shared_parameters"] == 4 * (2 * 96 + 96 * 2)
    assert rec["model"]["private_parameters"] == 4 * (2 * 96 + 96 * 2)
    assert rec["rounds"][0]["uplink_bytes"] == 2 * (16 + 4 * rec["model"]["shared_parameters"])


def test_a_broken_plugin_or_a_stolen_name_is_one_line_and_the_rest_works(tmp_path):
    """A plugin whose module fails to import is listed as broken and names its package when
    run; a plugin registering a built-in's name is a reported conflict, never a silent swap."""
    site = _install(tmp_path, "brokenplug", "raise ImportError('no module named missing_dependency')\n",
                    'broken = "brokenplug:Method"\n')
    _install(tmp_path, "thief", PLUGIN, 'fedavg-lora = "thief:HalfLoRA"\n')
    env = {**os.environ, "PYTHONPATH": site, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pflbench.cli"]

    listed = subprocess.run(cmd + ["list", "methods", "--json"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["broken"]["description"].startswith("BROKEN:") and "brokenplug" in rows["broken"]["description"]
    assert "several packages" in rows["fedavg-lora"]["description"] and rows["pftt"]["description"].startswith("global")

    for method, words in (("broken", ("package brokenplug", "brokenplug:Method", "ImportError")),
                          ("fedavg-lora", ("pflbench", "thief"))):
        ran = subprocess.run(cmd + ["run", "--method", method, "--results-dir", str(tmp_path / "r")], env=env,
                             capture_output=True, text=True)
        assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and ran.stderr.startswith("error:"), ran.stderr
        assert all(w in ran.stderr for w in words), ran.stderr
    assert not (tmp_path / "r").exists()
