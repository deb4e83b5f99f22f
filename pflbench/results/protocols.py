"""Communication as a budget: quality under a budget, and cost to a target (docs/metrics.md).

Both read a run's curve: the untrained model at round 0 (cost nothing), then every evaluated
round (``--eval-every``; the last round always is) with the cumulative uplink and downlink
bytes (and their sum), airtime, energy and wall time up to it, summed from the round records.

- **Quality under a budget** (``pflbench table --budget uplink=5MB``): per run, the best score
  among the points whose cumulative cost is within the budget; per row, its mean and 95% t
  interval over seeds, paired seed by seed with the reference methods.
- **Cost to a target** (``pflbench table --target 60`` or ``--target 90%`` of the best row's
  mean final score): per run, the cost at the first point whose score reaches the target. A run
  that never reaches it is counted as not reached and left out of the means, never averaged as
  if it had.
"""

from __future__ import annotations

import math
import re
from typing import Any

from tabulate import tabulate

from pflbench import registry
from pflbench.errors import UserError
from pflbench.results.stats import estimate, paired
from pflbench.results.table import (REFERENCE_METHODS, Row, _setting_text, fmt_estimate, fmt_paired, group, human_bytes,
                                    reference_row)

# budget name -> (cumulative field, unit words accepted, how a value is shown)
COSTS = {"uplink": "uplink_bytes", "downlink": "downlink_bytes", "total": "total_bytes", "airtime": "airtime_s",
         "energy": "energy_j", "rounds": "round"}
_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_UNITS = {"uplink": _BYTES, "downlink": _BYTES, "total": _BYTES, "airtime": {"": 1, "s": 1, "min": 60, "h": 3600},
          "energy": {"": 1, "j": 1, "kj": 1e3}, "rounds": {"": 1}}


def parse_budget(text: str) -> tuple[str, float]:
    """``uplink=5MB``, ``downlink=200kB``, ``total=6MB`` (both directions), ``airtime=30s``, ``energy=2J``, ``rounds=3`` -> (kind, limit)."""
    kind, sep, value = text.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in COSTS:
        raise UserError(f"--budget {text!r}: use KIND=VALUE with KIND one of {', '.join(COSTS)} (e.g. uplink=5MB)")
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
    units = _UNITS[kind]
    if not m or m.group(2).lower() not in units:
        allowed = ", ".join(u for u in units if u) or "none"
        raise UserError(f"--budget {text!r}: {kind} takes a non-negative number{' with a unit (' + allowed + ')' if allowed != 'none' else ''}")
    limit = float(m.group(1)) * units[m.group(2).lower()]
    if not math.isfinite(limit):
        raise UserError(f"--budget {text!r}: the limit must be finite")
    return kind, limit


def curve(record: dict[str, Any]) -> list[dict[str, float]]:
    """The run's points: round 0 (the untrained model, no cost), then each evaluated round with
    its score and the cumulative cost up to and including it (``wall_s``: the rounds' training
    and evaluation time, on the machine that ran them)."""
    fields = ("uplink_bytes", "downlink_bytes", "airtime_s", "energy_j")
    total = {f: 0.0 for f in (*fields, "total_bytes", "wall_s")}
    points = [{"round": 0, "score": record["summary"]["base_score"], **total}]
    for r in record["rounds"]:
        for f in fields:
            total[f] += r.get(f) or 0.0
        total["total_bytes"] = total["uplink_bytes"] + total["downlink_bytes"]
        timing = r.get("timing") or {}
        total["wall_s"] += (timing.get("train_s") or 0.0) + (timing.get("eval_s") or 0.0)
        if r.get("eval") is not None:
            points.append({"round": r["round"], "score": r["eval"]["score"], **total})
    return points


def _better(metric: str):
    higher = registry.metrics.get(metric).higher_is_better
    return (lambda a, b: a > b) if higher else (lambda a, b: a < b), higher


def best_within(record: dict[str, Any], kind: str, limit: float) -> float:
    """The best score among the run's points whose cumulative ``kind`` is within ``limit``
    (round 0 always is)."""
    better, _ = _better(record["summary"]["metric"])
    best = None
    for p in curve(record):
        if p[COSTS[kind]] <= limit * (1 + 1e-12) and (best is None or better(p["score"], best)):
            best = p["score"]
    return best


def cost_to(record: dict[str, Any], target: float) -> dict[str, float] | None:
    """The cumulative cost at the first point whose score reaches ``target``; None if none does."""
    _, higher = _better(record["summary"]["metric"])
    for p in curve(record):
        if (p["score"] >= target) if higher else (p["score"] <= target):
            return p
    return None


def varying_settings(rows: list[Row]) -> list[str]:
    """The settings, of those a wireless comparison varies, that differ between the rows."""
    return [k for k in ("model", "channel", "codec", "scheduler") if len({str(r.settings[k]) for r in rows}) > 1]


def budget_table(records: list[dict[str, Any]], budget: str, fmt: str = "github") -> str:
    """Per task, each method's best score within the budget: mean ± interval over seeds and
    the paired difference against each reference method under the same budget."""
    kind, limit = parse_budget(budget)
    shown = human_bytes(limit) if kind in ("uplink", "downlink", "total") else f"{limit:g}{ {'airtime': ' s', 'energy': ' J'}.get(kind, '')}"
    parts = []
    for task, rows in group(records).items():
        score = lambda row: row.per_seed(lambda rec: best_within(rec, kind, limit))  # noqa: E731
        varying = varying_settings(rows)
        body = []
        for r in rows:
            mine = score(r)
            cells = []
            for ref in REFERENCE_METHODS:
                other = reference_row(r, rows, ref)
                cells.append("" if other in (None, r) else fmt_paired(paired(mine, score(other))))
            evaluated = sum(len(curve(rec)) - 1 for rec in r.records) / len(r.records)
            body.append([r.method, *[_setting_text(k, r.settings[k]) for k in varying], len(mine),
                         fmt_estimate(estimate(list(mine.values()))), *cells,
                         fmt_estimate(r.estimate("score")), f"{evaluated:.0f}"])
        header = ["method", *varying, "n", f"best within {kind} {shown}", *[f"Δ {ref}" for ref in REFERENCE_METHODS],
                  "final score, no budget", "evaluated rounds"]
        parts.append(f"### {task}: quality under a budget of {kind} {shown}\n\n"
                     + tabulate(body, headers=header, tablefmt=fmt, disable_numparse=True))
    return "\n\n".join(parts) + (
        f"\n\nBest within: per run, the best score among the untrained model (round 0, no cost) and the evaluated "
        f"rounds whose cumulative {kind} is within the budget; mean ± half-width of the 95% t interval over seeds. "
        f"Δ: paired seed by seed with that method under the same budget (k/n up, * resolved). Evaluate more rounds "
        f"(--eval-every) for a finer curve.")


def parse_target(text: str) -> tuple[float, bool]:
    """``60`` (a score) or ``90%`` (of the best row's mean final score) -> (value, relative)."""
    relative = text.strip().endswith("%")
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise UserError(f"--target {text!r}: a score (e.g. 60) or a share of the best method's mean (e.g. 90%)") from None
    if not math.isfinite(value) or (relative and not 0 < value <= 100):
        raise UserError(f"--target {text!r}: a finite score, or a percentage in (0, 100]")
    return value, relative


def target_table(records: list[dict[str, Any]], target: str, fmt: str = "github") -> str:
    """Per task, each method's cost until its score first reaches the target: reached k/n,
    and over the runs that reached it, the mean ± interval of the rounds, uplink, downlink,
    airtime and energy spent. Runs that never reached it are counted, not averaged."""
    value, relative = parse_target(target)
    parts = []
    for task, rows in group(records).items():
        metric = rows[0].records[0]["summary"]["metric"]
        _, higher = _better(metric)
        goal = value
        if relative:
            means = [r.estimate("score").mean for r in rows]
            best = max(means) if higher else min(means)
            goal = best * value / 100
        varying = varying_settings(rows)
        body = []
        for r in rows:
            hits = [cost_to(rec, goal) for rec in r.records]
            reached = [h for h in hits if h is not None]

            def cell(field: str, show=fmt_estimate, reached=reached) -> str:
                return show(estimate([h[field] for h in reached])) if reached else "not reached"

            body.append([r.method, *[_setting_text(k, r.settings[k]) for k in varying], f"{len(reached)}/{len(hits)}",
                         cell("round"), cell("uplink_bytes", _bytes_estimate), cell("downlink_bytes", _bytes_estimate),
                         cell("total_bytes", _bytes_estimate), cell("airtime_s"), cell("energy_j")])
        header = ["method", *varying, "reached", "rounds", "uplink", "downlink", "up+down", "airtime s", "energy J"]
        what = f"{value:g}% of the best method's mean final score, {goal:.2f}" if relative else f"{goal:g}"
        parts.append(f"### {task}: cost to reach a score of {what}\n\n"
                     + tabulate(body, headers=header, tablefmt=fmt, disable_numparse=True))
    return "\n\n".join(parts) + (
        "\n\nReached: runs whose score reached the target at an evaluated round (or at round 0, the untrained model), "
        "of the row's runs. Costs: cumulative up to that round, mean ± half-width of the 95% t interval over the runs "
        "that reached it; runs that did not are counted in 'reached' and left out of the means. Evaluate more rounds "
        "(--eval-every) for a finer curve.")


def _bytes_estimate(e) -> str:
    if e.n < 2:
        return human_bytes(e.mean)
    return f"{human_bytes(e.mean)} ± {human_bytes(e.half_width)}"


def default_budget(rows: list[Row]) -> float | None:
    """The report's uplink budget for a task: what a whole run of the cheapest method that
    sends anything spends (the smallest non-zero mean final uplink of a row); None when no row
    sends anything."""
    sent = [r.mean("uplink_bytes") for r in rows if r.mean("uplink_bytes") > 0]
    return min(sent) if sent else None


def report_tables(records: list[dict[str, Any]], fmt: str = "github") -> str | None:
    """The report's two protocol tables per task: quality under the ``default_budget`` of
    uplink, and cost to 90% of the best row's mean final score. None when no run sends
    anything (a budget of bytes then says nothing)."""
    parts = []
    for task, rows in group(records).items():
        limit = default_budget(rows)
        if limit is None:
            continue
        mine = [rec for r in rows for rec in r.records]
        parts.append(budget_table(mine, f"uplink={limit:.0f}B", fmt))
        parts.append(target_table(mine, "90%", fmt))
    if not parts:
        return None
    return "\n\n".join(parts) + (
        "\n\nThe report's budget is what a whole run of the cheapest method that sends anything spends (its mean "
        "final uplink); the target is 90% of the best method's mean final score. `pflbench table DIR --budget "
        "KIND=VALUE` and `--target T|P%` give any other.")
