"""Each client's weights over a reward card's roles (PFIT's personalization: r_i = sum_k w_ik
R_k), as the card sets them in ``mixture:``:

- ``{beta: {a: A, b: B}}``: two roles; the first role's weight w ~ Beta(A, B), the second's 1 - w;
- ``{dirichlet: {alpha: A}}``: any number of roles; the weights ~ Dirichlet(A, ..., A);
- ``{field: NAME}``: read from the data: every record of a client carries the same value, a
  number (two roles: the first role's weight) or a list with one weight per role.

Drawn weights are fixed by the run's seed and the client's name, so a client keeps its
preferences across methods and its neighbours' draws. They are part of the card's data (the
partition of preferences over clients); combining the reward models is ``rewards.mixture``.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from pflbench.errors import UserError

MIXTURE_TAG = 0x317E  # keeps the weight draws apart from every other draw of the seed
KINDS = ("beta", "dirichlet", "field")


def check_mixture(spec: Any, roles: list[str], where: str) -> dict[str, Any]:
    """The card's ``mixture:``, validated against its reward roles."""
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise UserError(f"{where}: mixture must be one of {{beta: {{a: 0.5, b: 0.5}}}}, {{dirichlet: {{alpha: 1.0}}}} or {{field: NAME}}")
    kind, args = next(iter(spec.items()))
    if kind == "field":
        if not isinstance(args, str) or not args:
            raise UserError(f"{where}: mixture.field must name a field of the data")
        return {"field": args}
    need = ("a", "b") if kind == "beta" else ("alpha",)
    if not isinstance(args, dict) or set(args) != set(need):
        raise UserError(f"{where}: mixture.{kind} needs exactly {', '.join(need)}")
    for key in need:
        value = args[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UserError(f"{where}: mixture.{kind}.{key} must be a positive number, got {value!r}")
    if kind == "beta" and len(roles) != 2:
        raise UserError(f"{where}: mixture beta weighs exactly two rewards; this card has {len(roles)} (use dirichlet)")
    return {kind: {k: float(args[k]) for k in need}}


def client_weights(spec: dict[str, Any], roles: list[str], name: str, rows: list[dict[str, Any]], seed: int) -> dict[str, float]:
    """One client's weights over ``roles`` (summing to 1)."""
    kind, args = next(iter(spec.items()))
    if kind == "field":
        values = {_as_tuple(r.get(args)) for r in rows}
        odd = next((v for v in values if v is not None and not all(math.isfinite(x) for x in v)), None)
        if odd is not None:  # NaN differs from itself: it would read as many different values
            raise UserError(f"client {name}: the mixture field {args!r} must be finite weights, got {odd}")
        if len(values) != 1 or None in values:
            raise UserError(f"client {name}: its records must all carry one value of the mixture field {args!r}, got {sorted(map(str, values))[:3]}")
        value = values.pop()
        w = (value[0], 1 - value[0]) if len(value) == 1 and len(roles) == 2 else value
        if len(w) != len(roles) or any(x < 0 for x in w) or abs(sum(w) - 1) > 1e-6:
            raise UserError(f"client {name}: mixture field {args!r} must give {len(roles)} non-negative weights summing to 1 "
                            f"(or, for two rewards, the first one's weight in [0, 1]); got {value}")
    else:
        rng = np.random.default_rng([seed, MIXTURE_TAG, zlib.crc32(name.encode())])
        if kind == "beta":
            first = float(rng.beta(args["a"], args["b"]))
            w = (first, 1 - first)
        else:
            w = tuple(float(x) for x in rng.dirichlet([args["alpha"]] * len(roles)))
    return {role: float(x) for role, x in zip(roles, w)}


def _as_tuple(value: Any) -> tuple[float, ...] | None:
    try:
        if isinstance(value, (list, tuple)):
            return tuple(float(v) for v in value)
        return (float(value),) if value is not None else None
    except (TypeError, ValueError):
        return None
