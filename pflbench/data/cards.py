"""Task cards: YAML files that describe a task as data (see docs/tasks.md).

Built-in cards live in the repository's ``tasks/`` folder, shipped as ``pflbench.cards``;
every ``*.yaml`` there is registered under its ``name``. ``--task path/to/card.yaml``
loads a user's card the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from pflbench import registry
from pflbench.config import CARD_DEFAULTS
from pflbench.data.mixture import check_mixture
from pflbench.data.partition import normalize
from pflbench.data.preprocess import PREPROCESSORS
from pflbench.data.sources import fingerprint, source_kind
from pflbench.data.task import Task
from pflbench.errors import UserError, shown
from pflbench.registry import Entry
from pflbench.yamlcards import packaged_cards, read_card

KINDS = ("instruction", "task", "preference", "reward")
REQUIRED = ("name", "kind", "description", "source", "metric", "partition")
OPTIONAL = ("text", "prompt", "reference", "rejected", "fields", "labels", "label_field", "split_field", "preprocess",
            "defaults", "test_fraction", "min_examples", "max_train_examples", "max_test_examples", "max_length", "max_new_tokens",
            "rewards", "mixture", "conflict_field", "temperature", "group_size")
REWARD_ONLY = ("rewards", "mixture", "conflict_field", "temperature", "group_size")

Name = Annotated[str, Strict(), Field(min_length=1)]
Count = Annotated[int, Strict(), Field(gt=0)]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]


class CardTypes(BaseModel):
    """The type of every task-card field (pydantic), checked before anything reads them;
    the rules between fields follow in ``parse_card``."""

    model_config = ConfigDict(extra="allow")
    name: Name
    kind: Name
    description: Annotated[str, Strict()]
    source: dict[str, Any]
    metric: Name
    partition: Any  # each partitioner's own schema: pflbench.data.partition.OPTIONS
    text: Annotated[str, Strict()] | None = None
    prompt: Annotated[str, Strict()] | None = None
    reference: Annotated[str, Strict()] | None = None
    rejected: Annotated[str, Strict()] | None = None
    fields: dict[Name, Name] | None = None
    labels: list[Annotated[str, Strict()] | Annotated[int, Strict()]] | None = None
    label_field: Name | None = None
    split_field: Name | None = None
    preprocess: Name | None = None
    defaults: dict[str, Any] | None = None
    test_fraction: Annotated[float, Strict(), Field(gt=0, lt=1)] | None = None
    min_examples: Count | None = None
    max_train_examples: Count | None = None
    max_test_examples: Count | None = None
    # bounds a run can hold: a prompt and an answer need two tokens; generation past a few
    # thousand tokens would outlast every small model's positions
    max_length: Annotated[int, Strict(), Field(ge=2, le=32768)] | None = None
    max_new_tokens: Annotated[int, Strict(), Field(gt=0, le=4096)] | None = None
    rewards: dict[Name, Name] | None = None
    mixture: dict[str, Any] | None = None
    conflict_field: Name | None = None
    # sampling temperature: below 0.01 the softmax overflows to inf/NaN; GRPO group size: the
    # responses sampled per prompt, each a generation, so hundreds are already out of reach
    temperature: Annotated[float, Strict(), Field(ge=0.01, le=100, allow_inf_nan=False)] | None = None
    group_size: Annotated[int, Strict(), Field(ge=2, le=256)] | None = None


def _check_types(data: dict[str, Any], where: str) -> None:
    try:
        CardTypes(**{str(k): v for k, v in data.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(shown(x) for x in err["loc"])
        got = repr(err.get("input"))
        raise UserError(f"{where}: {field}: {err['msg']} (got {got[:60]})") from None


def parse_card(data: Any, where: str, origin: str = "") -> Task:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a YAML mapping")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UserError(f"{where} lacks required field(s): {', '.join(missing)}")
    unknown = sorted(shown(k) for k in set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise UserError(f"{where} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED + OPTIONAL)}")
    _check_types(data, where)
    if data["kind"] not in KINDS:
        raise UserError(f"{where}: kind must be one of {', '.join(KINDS)}, got {data['kind']!r}")
    if data["metric"] not in registry.metrics.names():
        raise UserError(f"{where}: unknown metric {data['metric']!r}; choose one of: {', '.join(registry.metrics.names())}")
    if not isinstance(data["source"], dict):
        raise UserError(f"{where}: source must be a mapping, e.g. {{hf: org/name, split: train}} or {{file: data.jsonl}}")
    try:
        source_kind(data["source"])
        normalize(data["partition"])
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if data["kind"] == "reward":
        _check_reward_card(data, where)
    else:
        stray = [k for k in REWARD_ONLY if k in data]
        if stray:
            raise UserError(f"{where}: {', '.join(stray)} belong to cards of kind reward")
        if data["metric"] == "mixture-reward":
            raise UserError(f"{where}: metric mixture-reward is for cards of kind reward")
    has_text = data.get("text") is not None
    has_pair = data.get("prompt") is not None and (data.get("reference") is not None or data["kind"] == "reward")
    if has_text == has_pair:
        raise UserError(f"{where}: give either text (plain language modelling) or prompt and reference (instructions)")
    if data["metric"] == "label-accuracy" and not data.get("labels"):
        raise UserError(f"{where}: metric label-accuracy needs labels: [...]")
    if data["metric"] == "preference-accuracy" and data.get("rejected") is None:
        raise UserError(f"{where}: metric preference-accuracy needs a rejected template")
    if data.get("preprocess") is not None and data["preprocess"] not in PREPROCESSORS:
        raise UserError(f"{where}: unknown preprocess {data['preprocess']!r}; choose one of: {', '.join(PREPROCESSORS)}")
    if data.get("labels") == []:  # types and ranges were checked by CardTypes; an empty list is a list
        raise UserError(f"{where}: labels must be a list of label names, e.g. [negative, positive]")
    for key in ("text", "prompt", "reference", "rejected"):
        if data.get(key) is not None:
            _check_template(data[key], key, where)
    options = {k: data[k] for k in OPTIONAL if data.get(k) is not None}
    if "defaults" in options:
        options["defaults"] = _card_defaults(options["defaults"], where)
    if "labels" in options:
        options["labels"] = [str(label) for label in options["labels"]]
    if "temperature" in options:
        options["temperature"] = float(options["temperature"])
    task = Task(name=str(data["name"]), kind=data["kind"], description=" ".join(str(data["description"]).split()),
                metric=data["metric"], source=data["source"], partition=data["partition"], origin=origin, **options)
    return task


def _check_template(template: Any, key: str, where: str) -> None:
    """A template is a string whose fields are named (``{question}``, ``{instances[0][input]}``)."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise UserError(f"{where}: {key} is not a valid template ({exc}); write literal braces as {{{{ and }}}}") from None
    bad = [f for f in fields if not f or f.split("[")[0].split(".")[0].isdigit()]
    if bad:
        raise UserError(f"{where}: {key} uses a positional field {{{shown(bad[0])}}}; name a field of the records, e.g. {{question}}")


def _check_reward_card(data: dict[str, Any], where: str) -> None:
    """A reward card: its prompts, its reward models by role, each client's mixture."""
    if data["metric"] != "mixture-reward":
        raise UserError(f"{where}: a card of kind reward is scored by metric mixture-reward, got {data['metric']!r}")
    if data.get("prompt") is None or data.get("text") is not None:
        raise UserError(f"{where}: a reward card gives prompt (and optionally reference, for diagnostics), not text")
    rewards = data.get("rewards")
    if not rewards:  # present, it is a mapping of names (CardTypes)
        raise UserError(f"{where}: rewards must map each role to a reward model, e.g. {{helpful: helpful-synth, harmless: harmless-synth}}")
    if "mixture" not in data:
        raise UserError(f"{where}: a reward card needs mixture: {{beta: {{a: .., b: ..}}}}, {{dirichlet: {{alpha: ..}}}} or {{field: NAME}}")
    data["mixture"] = check_mixture(data["mixture"], list(rewards), where)


def _card_defaults(data: Any, where: str) -> dict[str, Any]:
    """``defaults:`` (the card's recommended budget), checked against the settings a card may set."""

    unknown = sorted(shown(k) for k in set(data) - set(CARD_DEFAULTS))
    if unknown:
        raise UserError(f"{where}: defaults has unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(CARD_DEFAULTS)}")
    out = {}
    for key, value in data.items():
        kind = CARD_DEFAULTS[key]
        if kind is str:
            if not isinstance(value, str) or not value:
                raise UserError(f"{where}: defaults.{key} must be a name, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value) or (kind is int and not isinstance(value, int)):
            raise UserError(f"{where}: defaults.{key} must be a positive {kind.__name__}, got {value!r}")
        out[key] = kind(value)
    return out


def load_card(path: Path | str, identify: bool = True) -> Task:
    """A card file; a user's (``identify``) with its identity, so that the same card through
    any path is the same task. A built-in card is known by its registered name."""
    import dataclasses

    data, where = read_card(Path(path), "task")
    task = parse_card(data, where, str(Path(path).resolve()))
    if identify:
        task = dataclasses.replace(task, identity=card_identity(data, task))
        _BY_IDENTITY[task.identity] = task.origin
    return task


_BY_IDENTITY: dict[str, str] = {}  # NAME@HASH -> the card file it was read from, in this process


def card_identity(data: dict[str, Any], task: Task) -> str:
    """``NAME@HASH``: the card's name and 8 hex digits of a hash of its parsed content and of
    the data it reads (``sources.fingerprint``), never of the path it was given by. Two copies
    of one card share it; two different cards of one name differ in the hash, in the run id
    and in the table's task label."""
    import hashlib
    import json


    content = json.dumps(data, sort_keys=True, default=str)
    data_id = fingerprint(task.name, task.source, Path(task.origin).parent)
    return f"{task.name}@{hashlib.sha256((content + chr(10) + data_id).encode()).hexdigest()[:8]}"


def builtin_card_entries() -> dict[str, Entry]:
    return {name: Entry(name, lambda p=path: load_card(p, identify=False), str(path))
            for name, path in packaged_cards("pflbench.cards").items()}


def resolve_task(name: str) -> Task:
    """A registered task name, or a path to a card file."""
    if name.endswith((".yaml", ".yml")) and name not in registry.tasks.names():
        return load_card(name)
    if "@" in name and name not in registry.tasks.names():  # a card's identity (card_identity)
        if name in _BY_IDENTITY:
            return load_card(_BY_IDENTITY[name])
        raise UserError(f"task {name} is a card file's identity; give the card's path (--task PATH.yaml)")
    obj = registry.tasks.get(name)
    return obj() if callable(obj) and not isinstance(obj, Task) else obj
