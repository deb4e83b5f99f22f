"""The README and the documentation stay true: the README's shell blocks run as written, the
README stays a landing page, and the generated CLI reference is the app's."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shell_lines(text: str) -> list[str]:
    """Every command of the ```bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_the_readme_is_a_landing_page():
    assert len(README.splitlines()) <= 250
    assert "make demo" in README and "make test" in README


def test_the_readmes_commands_run_as_written(cli, tmp_path, monkeypatch):
    """Each command of the README's blocks, in a fresh folder: exit 0, and what it says it
    does shows (the quick start's two make targets are what CI itself runs, so they are
    checked by running CI, not here)."""
    monkeypatch.chdir(tmp_path)
    lines = shell_lines(README)
    runs = [l for l in lines if not l.startswith("make ")]
    assert [l.split()[0] for l in lines if l not in runs] == ["make", "make"] and runs
    for line in runs:
        args = shlex.split(line)
        assert args[0] == "pflbench", line
        code, out, err = cli(*args[1:])
        assert code == 0, f"{line}\n{err[-2000:]}"
        if args[1] == "table":
            rows = {l.split("|")[1].strip() for l in out.splitlines() if l.startswith("| ")}
            assert {"pftt", "local-only", "fedavg-lora", "base"} <= rows, out
    assert (tmp_path / "results" / "first" / "report" / "report.html").is_file()


def test_the_payload_reference_is_what_budget_show_gives_today():
    """docs/reference/payloads.md, checked on three methods (the whole page takes ~30 s to
    generate): the architecture table and those methods' rows are what `python docs/hooks.py`
    writes now; every built-in method has a row; the parameter counts are the published sizes."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    page = (ROOT / "docs" / "reference" / "payloads.md").read_text()
    part = hooks.payload_reference(("fedavg-lora", "pftt", "fedavg-full"))
    cells = lambda text: {tuple(c.strip() for c in l.split("|")[1:-1]) for l in text.splitlines() if l.startswith("| ")}  # noqa: E731
    assert len(cells(part)) > 10 and cells(part) <= cells(page), "docs/reference/payloads.md is stale: run `python docs/hooks.py`"
    from pflbench import registry

    rows = {l.split("|")[1].strip() for l in page.splitlines() if l.startswith("| ")}
    assert {n for n, e in registry.methods.entries().items() if e.origin.startswith(("pflbench.", "pflbench_baselines."))} <= rows
    published = {"llama-3.2-1b": "1,235,814,400", "llama-2-7b": "6,738,415,616", "llama-3.1-8b": "8,030,261,248",
                 "qwen2.5-7b": "7,615,616,512", "qwen2.5-0.5b": "494,032,768", "smollm2-135m": "134,515,008"}
    for name, count in published.items():
        assert any(l.startswith(f"| `{name}`") and f"| {count} " in l for l in page.splitlines()), name


def test_the_cli_reference_is_generated_from_the_app():
    """docs/reference/cli.md is what `python docs/hooks.py` writes from the Typer app today:
    a command or flag changed without regenerating it fails here."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert page == hooks.cli_reference(), "docs/reference/cli.md is stale: run `python docs/hooks.py` (make docs does)"
    from pflbench.cli import app
    import typer.main

    for name in typer.main.get_command(app).commands:
        assert f"## `pflbench {name}" in page, name
