"""The run record (schema ``pflbench.run/1``, documented in docs/results.md) and
the folders it is written to.

A run in progress lives in ``RESULTS_DIR/RUN_ID.partial/``:

- ``spec.json``: the resolved RunSpec, written before the first round;
- ``rounds.jsonl``: one round record per line, appended and flushed as each round ends;
- ``checkpoint.safetensors``: after each round, everything the next round needs (global shared
  tensors, every client's private tensors and codec memory; the finished rounds, the reference
  scores and who has trained, as JSON in its metadata), replaced atomically;
- ``lock``: held (``flock``) by the one process writing the run.

When the run ends, ``record.json`` is written and the folder becomes ``RESULTS_DIR/RUN_ID/``,
replacing an earlier finished one only then (a re-run is asked for with ``--force``). So a
failed or interrupted attempt never touches a finished run, and the same command resumes an
interrupted one from its checkpoint. Every JSON file is strict JSON (no NaN or Infinity).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from pflbench.errors import UserError
from pflbench.yamlcards import TooLarge, read_bounded

SCHEMA = "pflbench.run/1"
TIMING_KEYS = ("wall_s", "timing")  # the only fields that differ between identical runs
CHECKPOINT = "checkpoint.safetensors"


def strict(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (see ``strict``)."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def partial_dir(results_dir: Path | str, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}.partial"


class RunWriter:
    """Writes one run into its ``.partial`` folder, holding its lock; ``finish`` publishes it."""

    def __init__(self, results_dir: Path | str, run_id: str, spec: dict[str, Any]):
        import fcntl

        self.final = Path(results_dir) / run_id
        self.dir = partial_dir(results_dir, run_id)
        self._rounds = None
        created = not self.dir.exists()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.dir / "lock", "a+", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write results to {results_dir}: {exc.strerror or exc}; choose another --results-dir") from None
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise UserError(f"another pflbench process is running this spec into {self.dir} (run id {run_id}); "
                            f"wait for it to finish, or use another --results-dir") from None
        self.created = created  # a fresh attempt: nothing to resume, and nothing to keep if it fails early
        try:
            atomic_write(self.dir / "spec.json", dumps(spec, indent=2, sort_keys=True))
        except OSError as exc:
            self.close()
            raise UserError(f"cannot write results to {results_dir}: {exc.strerror or exc}; choose another --results-dir") from None

    # ---- resume -----------------------------------------------------------------------
    def resume_state(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(tensors, state) of the last checkpoint, or None (nothing finished yet, or a
        checkpoint that cannot be read: then the run starts over)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = self.dir / CHECKPOINT
        if not path.exists():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                state = json.loads(f.metadata()["state"])
            return load_file(str(path)), state
        except (OSError, KeyError, ValueError, SafetensorError):
            return None

    def start(self, rounds: list[dict[str, Any]]) -> None:
        """Open ``rounds.jsonl`` holding exactly the rounds already finished."""
        self._rounds = open(self.dir / "rounds.jsonl", "w", encoding="utf-8")
        for rec in rounds:
            self._rounds.write(dumps(rec, sort_keys=True) + "\n")
        self._rounds.flush()

    # ---- each round -------------------------------------------------------------------
    def checkpoint(self, rec: dict[str, Any], tensors: dict[str, Any], state: dict[str, Any]) -> None:
        """Record a finished round: the checkpoint first (atomically), then its log line."""
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        tmp = self.dir / (CHECKPOINT + ".tmp")
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                      metadata={"state": dumps(state, sort_keys=True)})
            os.replace(tmp, self.dir / CHECKPOINT)
            self._rounds.write(dumps(rec, sort_keys=True) + "\n")
            self._rounds.flush()
            os.fsync(self._rounds.fileno())
        except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
            raise UserError(f"cannot write the checkpoint of round {rec['round']} to {self.dir}: {reason} "
                            f"(finished rounds up to the previous one are kept there)") from None

    # ---- the end ------------------------------------------------------------------------
    def finish(self, record: dict[str, Any]) -> Path:
        """Write ``record.json`` and publish the run as ``RESULTS_DIR/RUN_ID/``, replacing an
        earlier finished one only now."""
        self._rounds.close()
        try:
            atomic_write(self.dir / "record.json", dumps(record, indent=2, sort_keys=True))
            (self.dir / CHECKPOINT).unlink(missing_ok=True)
            old = self.final.with_name(self.final.name + ".replaced")
            if self.final.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.rename(self.final, old)
            (self.dir / "lock").unlink(missing_ok=True)
            os.rename(self.dir, self.final)
            shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise UserError(f"cannot write the finished record to {self.dir}: {exc.strerror or exc}") from None
        return self.final / "record.json"

    def close(self, keep: bool = True) -> None:
        """Release the lock; ``keep=False`` removes the folder of an attempt that finished no
        round (no orphan folders)."""
        if self._rounds is not None and not self._rounds.closed:
            self._rounds.close()
        if not self._lock.closed:
            self._lock.close()
        if not keep and self.dir.exists() and not (self.dir / CHECKPOINT).exists():
            shutil.rmtree(self.dir, ignore_errors=True)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a
    full disk or a kill leaves the old file whole, never a cut one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


UNREADABLE = (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError)  # what reading a record may raise


def _no_constant(name: str) -> float:
    raise ValueError(f"holds {name}, which is not a number (records are strict JSON)")


def _read(path: Path) -> dict[str, Any]:
    """The record in ``path``, checked (``check_record``); raises one of ``UNREADABLE``. Strict
    JSON: NaN and Infinity, which the suite never writes, are refused."""

    try:
        raw = read_bounded(path, MAX_RECORD_BYTES)
    except TooLarge as exc:
        raise ValueError(f"{exc}: not a record") from None
    return check_record(json.loads(raw.decode("utf-8"), parse_constant=_no_constant))


MAX_RECORD_BYTES = 64 << 20  # a 1,000-client, 100-round record is a few MiB


def read_record(run_dir: Path | str) -> dict[str, Any] | None:
    """The finished record in ``run_dir``, or None (no record, unreadable, another schema)."""
    try:
        return _read(Path(run_dir) / "record.json")
    except UNREADABLE:
        return None


def finished_record(results_dir: Path | str, run_id: str) -> dict[str, Any] | None:
    """The finished record of ``run_id`` in ``results_dir`` (None if there is none), after
    mending a publish that a kill cut short (``RunWriter.finish`` renames the old run to
    ``RUN_ID.replaced``, then the new one into place): a new run that had finished is
    published, else the old one comes back; a leftover ``.replaced`` beside a published run
    is removed. Never re-runs what had finished."""
    final = Path(results_dir) / run_id
    old = final.with_name(run_id + ".replaced")
    part = partial_dir(results_dir, run_id)
    try:
        if not final.exists():
            if read_record(part) is not None:  # the new run finished; the kill came before its rename
                (part / "lock").unlink(missing_ok=True)
                os.rename(part, final)
            elif read_record(old) is not None:  # the new run had not finished: the old one stays
                os.rename(old, final)
        if final.exists() and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass  # left as it is: read below, or run again
    return read_record(final)


REQUIRED = {"run_id": str, "spec": dict, "task": dict, "rounds": list, "summary": dict, "reference": dict}


def check_record(rec: Any) -> dict[str, Any]:
    """``rec`` if it has the shape tables read (schema, run id, spec, rounds, summary, ...),
    else ValueError saying what is wrong."""
    if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} record")
    for key, kind in REQUIRED.items():
        if not isinstance(rec.get(key), kind):
            raise ValueError(f"field {key!r} is missing or not a {kind.__name__}")
    for key in ("task", "method", "seed"):
        if key not in rec["spec"]:
            raise ValueError(f"spec lacks {key!r}")
    score = rec["summary"].get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f"summary has no finite numeric score (got {score!r})")
    if isinstance(rec["spec"]["seed"], bool) or not isinstance(rec["spec"]["seed"], int):
        raise ValueError(f"spec's seed is not an integer (got {rec['spec']['seed']!r})")
    if not isinstance(rec["spec"]["task"], str) or not isinstance(rec["spec"]["method"], str):
        raise ValueError("spec's task and method must be names")
    return rec


def load_records(results_dir: Path | str, warn=None) -> list[dict[str, Any]]:
    """Every finished run record under ``results_dir`` (any depth), in path order. A record
    that cannot be read or has the wrong shape is skipped; ``warn(message)`` hears which."""
    out = []
    for path in sorted(Path(results_dir).rglob("record.json")):
        if path.parent.name.endswith((".partial", ".replaced")):
            continue  # not published (a run being written, or one a cut-short publish left; finished_record mends it)
        try:
            out.append(_read(path))
        except UNREADABLE as exc:
            if warn is not None:
                reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc).splitlines()[0][:120]
                warn(f"warning: skipped {path}: {reason}")
    return out


def strip_timing(obj: Any) -> Any:
    """The record without wall-clock fields: what two runs of one spec must agree on."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj
