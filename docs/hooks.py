"""mkdocs hooks (mkdocs.yml): the site is built from the files the repository already has, so
nothing is written twice.

- The home page is the README itself.
- The committed leaderboards (``leaderboard/``: tables, reports, figures) are pages of the site.
- The CLI reference (``docs/reference/cli.md``) is generated from the Typer app:
  ``python docs/hooks.py`` writes it (``make docs`` does, before building), and a test fails
  when the committed page differs from what the app generates, so it cannot drift.
- Links are written repository-relative (they work when the Markdown is read on a forge); here
  each one is mapped to the page it names on the site.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def cli_reference() -> str:
    """The Markdown of every command, option and help text of ``pflbench``, from the app."""
    import click
    import typer.main
    from typer.cli import get_docs_for_click

    from pflbench.cli import app

    command = typer.main.get_command(app)
    text = get_docs_for_click(obj=command, ctx=click.Context(command), name="pflbench", title="CLI reference")
    note = ("Generated from the Typer app by `python docs/hooks.py` (`make docs` runs it); "
            "`pflbench COMMAND --help` prints the same.\n\n")
    return text.replace("\n", "\n\n" + note, 1) if text.startswith("# ") else note + text


def on_files(files, config):
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / "README.md")))
    for path in sorted((ROOT / "leaderboard").rglob("*")):
        if path.suffix in (".md", ".png") and path.is_file():
            files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files


def _source(page) -> Path:
    """The repository path the page's Markdown was read from."""
    if page.file.src_uri == "index.md":
        return ROOT / "README.md"
    if page.file.abs_src_path:
        return Path(page.file.abs_src_path)
    return ROOT / "docs" / page.file.src_uri


def on_page_markdown(markdown, page, config, files):
    src = _source(page)
    site_dir_of_page = os.path.dirname(page.file.src_uri)

    def remap(match):
        target = match.group(2)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (src.parent / path).resolve()
        try:
            rel = resolved.relative_to(ROOT).as_posix()
        except ValueError:
            return match.group(0)
        if rel.startswith("docs/"):
            rel = rel[len("docs/"):]
        elif not rel.startswith("leaderboard/"):
            return match.group(0)  # a file outside the site: left for mkdocs to report
        new = os.path.relpath(rel, site_dir_of_page or ".")
        return f"{match.group(1)}{new}{'#' + anchor if anchor else ''}{match.group(3)}"

    return LINK.sub(remap, markdown)


if __name__ == "__main__":
    (ROOT / "docs" / "reference").mkdir(exist_ok=True)
    (ROOT / "docs" / "reference" / "cli.md").write_text(cli_reference(), encoding="utf-8")
