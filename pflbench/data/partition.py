"""Partitioners: records -> [(client name, records)], deterministic for a seed.

Card syntax, ``partition:``

- ``{iid: {}}``: a seeded shuffle dealt round-robin.
- ``{dirichlet: {key: label, alpha: 0.3}}``: per value of ``key``, its records split among
  clients by proportions drawn from Dirichlet(alpha); small alpha, strong skew.
- ``{natural: {key: character}}`` (or ``{natural: character}``): one client per value of
  ``key`` with at least ``min_examples`` records, ``n`` of them chosen by the seed.
- ``{shards: {key: label, per_client: 2}}``: records sorted by ``key``, cut into
  ``per_client x clients`` shards, ``per_client`` random shards per client.
- ``{quantity-skew: {exponent: 1.5}}``: iid labels, client sizes from a power law.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pflbench.errors import UserError, shown

PART_TAG = 0x7A5C


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, PART_TAG])


def _named(groups: list[list[dict]]) -> list[tuple[str, list[dict]]]:
    return [(f"client{i:03d}", g) for i, g in enumerate(groups)]


def iid(task, rows, n, seed, **_):
    order = _rng(seed).permutation(len(rows))
    return _named([[rows[j] for j in order[i::n]] for i in range(n)])


def dirichlet(task, rows, n, seed, key="label", alpha=0.5, **_):
    rng = _rng(seed)
    groups: list[list[dict]] = [[] for _ in range(n)]
    for value in sorted({str(r[key]) for r in rows}):
        members = [r for r in rows if str(r[key]) == value]
        order = rng.permutation(len(members))
        cuts = (np.cumsum(rng.dirichlet([float(alpha)] * n)) * len(members)).astype(int)[:-1]
        for client, part in enumerate(np.split(order, cuts)):
            groups[client].extend(members[j] for j in part)
    return _named(groups)


def natural(task, rows, n, seed, key="user", **_):
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row)
    eligible = sorted(k for k, v in groups.items() if len(v) >= task.min_examples)
    if n > len(eligible):
        raise UserError(
            f"task {task.name} has {len(eligible)} clients with at least {task.min_examples} examples; "
            f"--clients {n} is too many"
        )
    chosen = sorted(_rng(seed).choice(len(eligible), size=n, replace=False).tolist())
    return [(eligible[i], groups[eligible[i]]) for i in chosen]


def shards(task, rows, n, seed, key="label", per_client=2, **_):
    per = int(per_client)
    rng = _rng(seed)
    order = sorted(range(len(rows)), key=lambda j: (str(rows[j][key]), j))
    pieces = np.array_split(np.array(order), per * n)
    assignment = rng.permutation(per * n)
    return _named([[rows[j] for s in assignment[i * per : (i + 1) * per] for j in pieces[s]] for i in range(n)])


def quantity_skew(task, rows, n, seed, exponent=1.5, **_):
    rng = _rng(seed)
    weights = rng.pareto(float(exponent), n) + 1
    sizes = np.maximum((weights / weights.sum() * len(rows)).astype(int), 1)
    order = rng.permutation(len(rows))
    cuts = np.cumsum(sizes)[:-1]
    return _named([[rows[j] for j in part] for part in np.split(order[: sizes.sum()], cuts)])


PARTITIONERS = {"iid": iid, "dirichlet": dirichlet, "natural": natural, "shards": shards, "quantity-skew": quantity_skew}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IIDOptions(_Options):
    pass


class DirichletOptions(_Options):
    key: str = "label"
    alpha: float = Field(0.5, gt=0, allow_inf_nan=False)


class NaturalOptions(_Options):
    key: str = "user"


class ShardsOptions(_Options):
    key: str = "label"
    per_client: int = Field(2, ge=1)


class QuantitySkewOptions(_Options):
    exponent: float = Field(1.5, gt=0, allow_inf_nan=False)


# each partitioner's options, validated by schema (pydantic): types, ranges, no unknown keys
OPTIONS = {"iid": IIDOptions, "dirichlet": DirichletOptions, "natural": NaturalOptions, "shards": ShardsOptions,
           "quantity-skew": QuantitySkewOptions}


def normalize(spec: Any) -> tuple[str, dict]:
    """``{natural: character}`` -> ("natural", {"key": "character"}); checks the kind and
    validates the options against the partitioner's schema."""
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise UserError(f"partition must be one of {', '.join(PARTITIONERS)} with its options, e.g. {{dirichlet: {{key: label, alpha: 0.3}}}}")
    (kind, options), = spec.items()
    if kind not in PARTITIONERS:
        raise UserError(f"unknown partition {kind!r}; choose one of: {', '.join(PARTITIONERS)}")
    if options is None:
        options = {}
    if isinstance(options, str):
        options = {"key": options}
    if not isinstance(options, dict):
        raise UserError(f"partition {kind}: options must be a mapping")
    try:
        return kind, OPTIONS[kind](**options).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(shown(x) for x in err["loc"]) or "options"
        allowed = ", ".join(OPTIONS[kind].model_fields) or "none"
        raise UserError(f"partition {kind}: {field}: {err['msg']} (got {err.get('input')!r}; options: {allowed})") from None


def partition(task, rows, n: int, seed: int):
    kind, options = normalize(task.partition)
    if 2 * n > len(rows):  # every client needs a training and a test example: fail before allocating anything
        raise UserError(f"task {task.name} has {len(rows)} records: at most {len(rows) // 2} clients of 2 examples each, "
                        f"not --clients {n}")
    if options.get("key") is not None and rows and options["key"] not in rows[0]:
        raise UserError(f"task {task.name}: partition key {options['key']!r} is not a field of the records")
    groups = PARTITIONERS[kind](task, rows, n, seed, **options)
    small = [name for name, g in groups if len(g) < 2]
    if small:
        raise UserError(f"task {task.name}: {len(small)} client(s) got fewer than 2 examples under {kind}; use fewer --clients")
    return groups


def label_key(task) -> str | None:
    """The field whose distribution over clients is worth showing: the card's label, else
    the partition's key."""
    if task.labels:
        return "label_name"
    kind, options = normalize(task.partition)
    return None if kind == "natural" else options.get("key")  # natural: one value per client


def skew(shares: list[list[float]]) -> float:
    """Mean total-variation distance between each client's label shares and the pooled mean
    (0: identical; 1: disjoint)."""
    if not shares:
        return 0.0
    pooled = np.mean(np.array(shares), axis=0)
    return float(np.mean([0.5 * np.abs(np.array(s) - pooled).sum() for s in shares]))
