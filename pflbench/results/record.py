"""The run record (schema ``pflbench.run/1``, documented in README "Results schema") and
the directory it is written to, round by round.

Layout of ``RESULTS_DIR/RUN_ID/``:

- ``spec.json``: the resolved RunSpec, written before the first round.
- ``rounds.jsonl``: one round record per line, appended and flushed as each round ends,
  so an interrupted run keeps every finished round.
- ``record.json``: the whole record (spec, rounds, summary), written when the run ends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pflbench.errors import UserError

SCHEMA = "pflbench.run/1"
TIMING_KEYS = ("wall_s", "timing")  # the only fields that differ between identical runs


class RunWriter:
    def __init__(self, results_dir: Path | str, run_id: str, spec: dict[str, Any]):
        self.dir = Path(results_dir) / run_id
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.dir / "spec.json", json.dumps(spec, indent=2, sort_keys=True))
            self._rounds = open(self.dir / "rounds.jsonl", "w", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write results to {results_dir}: {exc.strerror or exc}; choose another --results-dir") from None
        (self.dir / "record.json").unlink(missing_ok=True)  # a stale record from an earlier run

    def append_round(self, rec: dict[str, Any]) -> None:
        self._rounds.write(json.dumps(rec, sort_keys=True) + "\n")
        self._rounds.flush()
        os.fsync(self._rounds.fileno())

    def finish(self, record: dict[str, Any]) -> Path:
        self._rounds.close()
        path = self.dir / "record.json"
        _atomic_write(path, json.dumps(record, indent=2, sort_keys=True))
        return path

    def close(self) -> None:
        if not self._rounds.closed:
            self._rounds.close()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_record(run_dir: Path | str) -> dict[str, Any] | None:
    """The finished record in ``run_dir``, or None (no record, unreadable, another schema)."""
    try:
        rec = json.loads((Path(run_dir) / "record.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and rec.get("schema") == SCHEMA else None


def load_records(results_dir: Path | str) -> list[dict[str, Any]]:
    """Every finished run record under ``results_dir`` (any depth), in path order."""
    records = (read_record(path.parent) for path in sorted(Path(results_dir).rglob("record.json")))
    return [r for r in records if r is not None]


def strip_timing(obj: Any) -> Any:
    """The record without wall-clock fields: what two runs of one spec must agree on."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj
