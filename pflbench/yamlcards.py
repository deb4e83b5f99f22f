"""Reading YAML cards (tasks, channels): one place for the file errors and for finding the
cards a package ships."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pflbench.errors import UserError


MAX_CARD_BYTES = 256 * 1024  # a card is a page of settings, not data
MAX_ALIASES = 64  # YAML aliases (*name); many of them is an expansion bomb, not a card


class NotRegularFile(ValueError):
    """What ``read_bounded`` refuses: a folder, a device, a link to ``/dev/zero``."""


class TooLarge(ValueError):
    """What ``read_bounded`` refuses: more bytes than the limit."""


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them, else NotRegularFile
    or TooLarge; a missing file is FileNotFoundError. The size is read, never taken from the
    file system: a link to ``/dev/zero`` has st_size 0 and no end. The one bounded read of
    cards, suites, budgets and run records."""
    if path.exists() and not path.is_file():
        raise NotRegularFile("not a regular file")
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(f"larger than {limit >> 20} MiB" if limit >= 1 << 20 else f"larger than {limit >> 10} KiB")
    return raw


def read_card(path: Path, what: str) -> tuple[Any, str]:
    """(parsed YAML, "<what> card <path>" for messages); missing, unreadable, oversized or
    malformed: UserError."""
    where = f"{what} card {path}"
    try:
        if path.is_dir():
            raise UserError(f"{where} is a directory, not a YAML file")
        try:
            raw = read_bounded(path, MAX_CARD_BYTES)
        except NotRegularFile as exc:
            raise UserError(f"{where} is {exc}") from None
        except TooLarge as exc:
            raise UserError(f"{where} is {exc}: a card holds settings; put data in a file its source names") from None
        text = raw.decode("utf-8")
        if sum(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)) > MAX_ALIASES:
            raise UserError(f"{where} uses more than {MAX_ALIASES} YAML aliases; refused")
        return yaml.safe_load(text), where
    except FileNotFoundError:
        raise UserError(f"{where} does not exist") from None
    except UnicodeDecodeError:
        raise UserError(f"{where} is not UTF-8 text (a binary file?)") from None
    except OSError as exc:
        raise UserError(f"{where} cannot be read: {exc.strerror or exc}") from None
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
