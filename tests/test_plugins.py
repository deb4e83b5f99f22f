"""A method from a separately installed package, found through its entry point."""

import json
import os
import subprocess
import sys
import textwrap

from pflbench.methods.base import INTERFACE

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


def test_a_broken_plugin_is_one_line_and_a_plugin_never_takes_a_built_ins_name(tmp_path):
    """A plugin whose module fails to import is listed as broken and names its package when
    run. A plugin registering a built-in's name leaves the built-in where it was (list, run):
    the plugin's is PACKAGE:NAME, and one warning line names both. A name two plugins share
    has only the qualified forms."""
    site = _install(tmp_path, "brokenplug", "raise ImportError('no module named missing_dependency')\n",
                    'broken = "brokenplug:Method"\n')
    _install(tmp_path, "thief", PLUGIN, 'fedavg-lora = "thief:HalfLoRA"\nhalf = "thief:HalfLoRA"\n')
    _install(tmp_path, "twin", PLUGIN, 'half = "twin:HalfLoRA"\n')
    env = {**os.environ, "PYTHONPATH": site, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pflbench.cli"]

    listed = subprocess.run(cmd + ["list", "methods", "--json"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["broken"]["description"].startswith("BROKEN:") and "brokenplug" in rows["broken"]["description"]
    assert rows["fedavg-lora"]["package"] == "pflbench" and not rows["fedavg-lora"]["description"].startswith("BROKEN")
    assert rows["thief:fedavg-lora"]["package"] == "thief" and rows["thief:fedavg-lora"]["description"] == "query LoRA shared, value LoRA private"
    assert "half" not in rows and rows["thief:half"]["package"] == "thief" and rows["twin:half"]["package"] == "twin"
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, listed.stderr
    assert all(w in warnings[0] + warnings[1] for w in ("'fedavg-lora' is the built-in", "thief:fedavg-lora", "twin:half"))

    small = ["--clients", "2", "--clients-per-round", "1", "--rounds", "1", "--local-steps", "1", "--json",
             "--results-dir", str(tmp_path / "ok")]
    for method, package in (("fedavg-lora", "pflbench"), ("thief:fedavg-lora", "thief")):
        ran = subprocess.run(cmd + ["run", "--method", method, *small], env=env, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["spec"]["provenance"]["method"].startswith(f"{package}==")
    for method, words in (("broken", ("package brokenplug", "brokenplug:Method", "ImportError")),
                          ("half", ("thief:half", "twin:half"))):
        ran = subprocess.run(cmd + ["run", "--method", method, "--results-dir", str(tmp_path / "r")], env=env,
                             capture_output=True, text=True)
        errors = [line for line in ran.stderr.splitlines() if not line.startswith("warning:")]
        assert ran.returncode == 2 and len(errors) == 1 and errors[0].startswith("error:"), ran.stderr
        assert all(w in errors[0] for w in words), ran.stderr
    assert not (tmp_path / "r").exists()


OLD = PLUGIN + '''

class OldAggregate(HalfLoRA):
    """written for interface 1: aggregate without the round's info"""

    def aggregate(self, shared, updates):
        return shared


class Raises(HalfLoRA):
    """its local update fails in round 1"""

    def local_update(self, ctx):
        raise RuntimeError("index 7 is out of bounds")
'''


def test_a_plugin_for_an_older_interface_fails_before_training_and_a_failing_hook_is_one_line(tmp_path):
    """A hook whose signature the engine cannot call is refused when the plugin loads, before
    any model: one line naming the package, the class, the hook and the expected signature.
    An exception inside a plugin's hook is one line naming the plugin, the hook, the round
    and the client; its traceback goes to the run's log file."""
    site = _install(tmp_path, "oldplug", OLD, 'old-agg = "oldplug:OldAggregate"\nraises = "oldplug:Raises"\n')
    env = {**os.environ, "PYTHONPATH": site, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pflbench.cli"]
    small = ["--clients", "2", "--clients-per-round", "1", "--rounds", "1", "--local-steps", "1", "--results-dir", str(tmp_path / "r")]

    ran = subprocess.run(cmd + ["run", "--method", "old-agg", *small], env=env, capture_output=True, text=True)
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1, ran.stderr
    assert all(w in ran.stderr for w in ("package oldplug", "OldAggregate", "overrides aggregate(self, shared, updates)",
                                         f"interface {INTERFACE} calls aggregate(self, shared, updates, info)")), ran.stderr
    assert not (tmp_path / "r").exists()  # nothing ran: refused before a results folder or a model
    listed = subprocess.run(cmd + ["list", "methods", "--json"], env=env, capture_output=True, text=True)
    assert {r["name"]: r for r in json.loads(listed.stdout)}["old-agg"]["description"].startswith("BROKEN:")

    ran = subprocess.run(cmd + ["run", "--method", "raises", *small], env=env, capture_output=True, text=True)
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert all(w in ran.stderr for w in ("'raises' (package oldplug)", "RuntimeError: index 7 is out of bounds",
                                         "in local_update, round 1, client")), ran.stderr
    log = ran.stderr.rsplit("traceback in ", 1)[1].strip()
    assert "Traceback" in open(log).read() and 'raise RuntimeError("index 7' in open(log).read()


def cards_in(tmp_path):
    """A plugin's source of task cards (what a `pflbench.sources` entry point named `task` loads)."""
    from pflbench.data.cards import load_card
    from pflbench.registry import Entry
    from pflbench.yamlcards import packaged_cards

    world = packaged_cards("pflbench.cards")["synth-world"]
    card = tmp_path / "my-world.yaml"
    card.write_text(world.read_text().replace("name: synth-world", "name: my-world"))
    return {"my-world": Entry("my-world", lambda: load_card(card, identify=False), str(card))}


def test_a_plugin_source_adds_task_cards_and_a_plugin_check_cannot_loosen_the_built_in(tmp_path, monkeypatch):
    """The registry lists sources and checks found by entry point, as it lists the built-in
    cards: a plugin's source adds its cards under its package's name; only the suite's own
    method check runs (a plugin cannot register one that lets a broken method through)."""
    from importlib.metadata import EntryPoint

    from pflbench import registry

    real = registry.entry_points
    mine = EntryPoint("task", f"{__name__}:plugin_cards", "pflbench.sources")
    loose = EntryPoint("method", "builtins:print", "pflbench.checks")

    def with_plugin(group, name=None):
        found = list(real(group=group, name=name)) if name else list(real(group=group))
        extra = [ep for ep in (mine, loose) if ep.group == group and (name is None or ep.name == name)]
        return found + extra

    monkeypatch.setattr(registry, "entry_points", with_plugin)
    monkeypatch.setattr(sys.modules[__name__], "plugin_cards", lambda: cards_in(tmp_path), raising=False)
    registry.tasks.refresh()
    registry.methods.refresh()
    try:
        entries = registry.tasks.entries()
        assert "synth-world" in entries and entries["my-world"].package == "?"  # no distribution: a bare entry point
        assert registry.tasks.get("my-world").name == "my-world"
        assert [c.__module__ for c in registry.methods._checks()] == ["pflbench.methods.base"]
    finally:
        monkeypatch.undo()
        registry.tasks.refresh()
        registry.methods.refresh()


# Six plugins as a colleague would write them from docs/methods/adding.md, five of them under a
# built-in's name, one for the interface before `info` (the set of outside plugins)
OUTSIDE = {
    "ditto": ("ditto", '''
from dataclasses import dataclass

import torch

from pflbench.methods import LocalResult, LoraOptions, Method, Parts, proximal, train_steps, use_adapters


class Ditto(Method):
    name = "ditto"
    description = "a colleague's Ditto"
    deployed_adapters = ("personal",)
    shared_adapters = ("global",)

    @dataclass(frozen=True)
    class Options(LoraOptions):
        lam: float = 0.1

    def prepare(self, model):
        return Parts(shared=self.options.lora(model, "global"), private=self.options.lora(model, "personal"))

    def local_update(self, ctx):
        with use_adapters(ctx.model, ["global"]):
            loss = train_steps(ctx, ctx.parameters(ctx.parts.shared), ctx.steps)
        anchor = {n: ctx.global_shared[n.replace(".personal.", ".global.")] for n in ctx.parts.private}
        if ctx.participation == 0:
            with torch.no_grad():
                for n, p in ctx.model.named_parameters():
                    if n in anchor:
                        p.copy_(anchor[n])
        with use_adapters(ctx.model, ["personal"]):
            pull = proximal(ctx, self.options.lam, ctx.parts.private, anchor)
            train_steps(ctx, ctx.parameters(ctx.parts.private), ctx.steps, extra_loss=pull)
        return LocalResult(ctx.num_samples, loss)
'''),
    "fedprox": ("fedprox", '''
from dataclasses import dataclass

from pflbench.methods import LocalResult, LoraOptions, Method, Parts, proximal, train_steps


class FedProx(Method):
    name = "fedprox"
    description = "a colleague's FedProx"

    @dataclass(frozen=True)
    class Options(LoraOptions):
        mu: float = 0.01

    def prepare(self, model):
        return Parts(shared=self.options.lora(model, "global"))

    def local_update(self, ctx):
        return LocalResult(ctx.num_samples, train_steps(ctx, ctx.parameters(), ctx.steps,
                                                        extra_loss=proximal(ctx, self.options.mu)))
'''),
    "fedper-lora": ("fedper_lora", '''
from pflbench.methods import Method, Parts
from pflbench.models.adapters import add_lora


class FedPerLoRA(Method):
    name = "fedper-lora"
    description = "a colleague's FedPer: attention LoRA shared, MLP LoRA private"

    def prepare(self, model):
        return Parts(shared=add_lora(model, "body", 4, targets=("q_proj", "v_proj")),
                     private=add_lora(model, "head", 4, targets=("down_proj",)))
'''),
    "fedsa-lora": ("fedsa_lora", '''
from pflbench.methods import LoraOptions, Method, Parts


class FedSALoRA(Method):
    name = "fedsa-lora"
    description = "a colleague's FedSA: LoRA A shared, B private"
    Options = LoraOptions

    def prepare(self, model):
        names = self.options.lora(model, "sa")
        return Parts(shared=[n for n in names if "lora_A" in n], private=[n for n in names if "lora_A" not in n])
'''),
    "scaffold-lora": ("scaffold_lora", '''
from pflbench.methods import LoraOptions, Method, Parts


class Scaffold(Method):
    name = "scaffold-lora"
    description = "a colleague's SCAFFOLD, written before aggregate got the round's info"
    Options = LoraOptions

    def prepare(self, model):
        return Parts(shared=self.options.lora(model, "global"))

    def aggregate(self, shared, updates):
        return shared
'''),
    "half-lora": ("halflora", PLUGIN),
}


def test_six_outside_plugins_install_beside_the_suite_and_none_disables_a_built_in(tmp_path):
    """All six installed together: every built-in keeps its name and its package, each
    clashing plugin is reachable as PACKAGE:NAME with one warning line naming both, and each
    plugin either runs a round or fails in one line naming it before anything trains."""
    classes = {"ditto": "Ditto", "fedprox": "FedProx", "fedper-lora": "FedPerLoRA", "fedsa-lora": "FedSALoRA",
               "scaffold-lora": "Scaffold", "half-lora": "HalfLoRA"}
    for name, (package, module) in OUTSIDE.items():
        site = _install(tmp_path, package, module, f'{name} = "{package}:{classes[name]}"\n')
    env = {**os.environ, "PYTHONPATH": site, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pflbench.cli"]

    listed = subprocess.run(cmd + ["list", "methods", "--json"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    clashing = [n for n in OUTSIDE if n != "half-lora"]
    for name in clashing:
        assert rows[name]["package"] == "pflbench" and not rows[name]["description"].startswith("BROKEN"), rows[name]
        assert rows[f"{OUTSIDE[name][0]}:{name}"]["package"] == OUTSIDE[name][0]
    assert rows["half-lora"]["package"] == "halflora"
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 5 and all(any(f"{OUTSIDE[n][0]}:{n}" in w for w in warnings) for n in clashing), listed.stderr

    small = ["--clients", "2", "--clients-per-round", "2", "--rounds", "1", "--local-steps", "1", "--json"]
    for name in [*clashing, "half-lora"]:
        method = name if name == "half-lora" else f"{OUTSIDE[name][0]}:{name}"
        out = tmp_path / f"r-{OUTSIDE[name][0]}"
        ran = subprocess.run(cmd + ["run", "--method", method, *small, "--results-dir", str(out)], env=env,
                             capture_output=True, text=True)
        if name == "scaffold-lora":  # the stale one: refused before a model or a results folder
            errors = [line for line in ran.stderr.splitlines() if not line.startswith("warning:")]
            assert ran.returncode == 2 and len(errors) == 1 and "package scaffold_lora" in errors[0], ran.stderr
            assert "aggregate(self, shared, updates, info)" in errors[0] and not out.exists()
            continue
        assert ran.returncode == 0, (name, ran.stderr)
        record = json.loads(ran.stdout)
        assert record["spec"]["provenance"]["method"].startswith(f"{OUTSIDE[name][0]}=="), record["spec"]["provenance"]
        assert record["summary"]["uplink_bytes"] > 0
    for name in clashing[:1]:  # and the built-in of the same name still runs as itself
        ran = subprocess.run(cmd + ["run", "--method", name, *small, "--results-dir", str(tmp_path / "builtin")], env=env,
                             capture_output=True, text=True)
        assert ran.returncode == 0 and json.loads(ran.stdout)["spec"]["provenance"]["method"].startswith("pflbench=="), ran.stderr
