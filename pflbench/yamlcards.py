"""Reading YAML cards (tasks, channels): one place for the file errors and for finding the
cards a package ships."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pflbench.errors import UserError


def read_card(path: Path, what: str) -> tuple[Any, str]:
    """(parsed YAML, "<what> card <path>" for messages); missing or malformed: UserError."""
    where = f"{what} card {path}"
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")), where
    except FileNotFoundError:
        raise UserError(f"{where} does not exist") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None


def packaged_cards(package: str) -> dict[str, Path]:
    """Card name -> path, for every ``*.yaml`` shipped in ``package``."""
    out = {}
    for item in resources.files(package).iterdir():
        if item.name.endswith(".yaml"):
            path = Path(str(item))
            out[yaml.safe_load(path.read_text(encoding="utf-8"))["name"]] = path
    return out
