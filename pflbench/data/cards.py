"""Task cards: YAML files that describe a task as data (see README, "Task cards").

Built-in cards live in the repository's ``tasks/`` folder, shipped as ``pflbench.cards``;
every ``*.yaml`` there is registered under its ``name``. ``--task path/to/card.yaml``
loads a user's card the same way.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pflbench.data.task import Task
from pflbench.errors import UserError
from pflbench.registry import Entry

KINDS = ("instruction", "task", "preference")
REQUIRED = ("name", "kind", "description", "source", "text", "metric", "partition")
OPTIONAL = ("test_fraction", "min_examples", "max_train_examples", "max_test_examples", "max_length")


def _shakespeare_records(source: dict) -> list[dict[str, Any]]:
    from pflbench.data.shakespeare import character_speeches

    return [
        {"character": key, "text": speech}
        for key, speeches in character_speeches(min_speeches=1).items()
        for speech in speeches
    ]


# offline packages a card can name as ``source: {package: NAME}``
PACKAGE_SOURCES = {"shakespeare": _shakespeare_records}


def load_card(path: Path | str) -> Task:
    from pflbench.data.partition import PARTITIONERS
    from pflbench.evaluation.metrics import METRICS

    path = Path(path)
    where = f"task card {path}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{where} does not exist") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a YAML mapping")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UserError(f"{where} lacks required field(s): {', '.join(missing)}")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise UserError(f"{where} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED + OPTIONAL)}")
    if data["kind"] not in KINDS:
        raise UserError(f"{where}: kind must be one of {', '.join(KINDS)}, got {data['kind']!r}")
    if data["metric"] not in METRICS:
        raise UserError(f"{where}: unknown metric {data['metric']!r}; choose one of: {', '.join(METRICS)}")
    part = data["partition"]
    if not (isinstance(part, dict) and len(part) == 1 and next(iter(part)) in PARTITIONERS):
        raise UserError(f"{where}: partition must be one of {', '.join(PARTITIONERS)} with its argument, e.g. {{natural: character}}")
    source = data["source"]
    if not (isinstance(source, dict) and source.get("package") in PACKAGE_SOURCES):
        raise UserError(f"{where}: source must name an offline package, one of: {', '.join(PACKAGE_SOURCES)}")
    loader = PACKAGE_SOURCES[source["package"]]
    options = {k: data[k] for k in OPTIONAL if k in data}
    try:
        task = Task(
            name=str(data["name"]), kind=data["kind"], description=str(data["description"]).strip(),
            metric=data["metric"], source=source, records=lambda: loader(source), text=str(data["text"]),
            partition=part, origin=str(path), **options,
        )
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from None
    if not 0 < task.test_fraction < 1:
        raise UserError(f"{where}: test_fraction must be between 0 and 1")
    return task


def builtin_card_entries() -> dict[str, Entry]:
    out = {}
    for item in resources.files("pflbench.cards").iterdir():
        if item.name.endswith(".yaml"):
            path = Path(str(item))
            name = yaml.safe_load(path.read_text(encoding="utf-8"))["name"]
            out[name] = Entry(name, lambda p=path: load_card(p), str(path))
    return out


def resolve_task(name: str) -> Task:
    """A registered task name, or a path to a card file."""
    from pflbench import registry

    if name.endswith((".yaml", ".yml")) and name not in registry.tasks.names():
        return load_card(name)
    obj = registry.tasks.get(name)
    return obj() if callable(obj) and not isinstance(obj, Task) else obj
