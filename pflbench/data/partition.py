"""Partitioners: rows -> [(client name, rows)], deterministic for a seed."""

from __future__ import annotations

from typing import Any

from pflbench.errors import UserError


def natural(task, rows: list[dict[str, Any]], n: int, seed: int, key: str) -> list[tuple[str, list[dict]]]:
    """One client per value of ``key`` (a character, author, user...) with at least
    ``min_examples`` rows; ``n`` of them chosen by the seed, listed in name order."""
    from pflbench.data.task import TASK_SEED_TAG, seeded_rng

    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row)
    eligible = sorted(k for k, v in groups.items() if len(v) >= task.min_examples)
    if n > len(eligible):
        raise UserError(
            f"task {task.name} has {len(eligible)} clients with at least {task.min_examples} examples; "
            f"--clients {n} is too many"
        )
    chosen = sorted(seeded_rng(seed, TASK_SEED_TAG).choice(len(eligible), size=n, replace=False).tolist())
    return [(eligible[i], groups[eligible[i]]) for i in chosen]


PARTITIONERS = {"natural": natural}


def partition(task, rows, n: int, seed: int):
    (kind, arg), = task.partition.items()
    return PARTITIONERS[kind](task, rows, n, seed, arg)
