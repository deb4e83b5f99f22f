"""Leaderboard tables from run records (tabulate)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate


def human_bytes(n: int | float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per record. Collaboration gain: score minus local-only's on the same task,
    channel, model and seed (blank when there is no such local-only run)."""
    local = {
        _key(r): r["summary"]["score"] for r in records if r["spec"]["method"] == "local-only"
    }
    metric = records[0]["summary"]["metric"] if records else "score"
    header = [
        "method", "task", "channel", f"score ({metric})", "pers. gain", "collab. gain",
        "worst client", "unseen clients", "uplink", "downlink", "airtime s", "delivered/lost/late", "run id",
    ]
    body = []
    for r in records:
        s = r["summary"]
        base = local.get(_key(r))
        body.append([
            r["spec"]["method"], r["spec"]["task"], r["spec"]["channel"], f"{s['score']:.2f}",
            f"{s['personalization_gain']:+.2f}", "" if base is None else f"{s['score'] - base:+.2f}",
            f"{s['worst_client_score']:.2f}",
            "" if s.get("unseen_client_score") is None else f"{s['unseen_client_score']:.2f} ({s['unseen_clients']})",
            human_bytes(s["uplink_bytes"]), human_bytes(s["downlink_bytes"]),
            f"{s['airtime_s']:.2f}", f"{s['delivered_updates']}/{s['lost_updates']}/{s['late_updates']}", r["run_id"],
        ])
    return header, body


def _key(r: dict[str, Any]) -> tuple:
    s = r["spec"]
    return (s["task"], s["channel"], s["model"], s["seed"])


def render(records: list[dict[str, Any]], fmt: str = "github") -> str:
    """Rows in a fixed order (task, channel, model, seed, method), however the records were found."""
    records = sorted(records, key=lambda r: (*_key(r), r["spec"]["method"], r["run_id"]))
    header, body = rows(records)
    return tabulate(body, headers=header, tablefmt=fmt, disable_numparse=True)
