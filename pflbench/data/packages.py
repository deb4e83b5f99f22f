"""Offline data packages a card can name as ``source: {package: NAME}``."""

from __future__ import annotations

from typing import Any

from pflbench.data.shakespeare import character_speeches


def shakespeare_records() -> list[dict[str, Any]]:
    return [
        {"character": key, "text": speech}
        for key, speeches in character_speeches(min_speeches=1).items()
        for speech in speeches
    ]


PACKAGES = {"shakespeare": shakespeare_records}
