"""One registry type for everything that plugs in: methods, tasks, channels, models, rewards.

Entries come from Python entry-point groups (``pflbench.methods``, ``pflbench.tasks``,
``pflbench.channels``, ``pflbench.models``, ``pflbench.rewards``), so a separately installed package adds a
method without touching this repository. The suite's own components are registered the
same way, in its ``pyproject.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from pflbench.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    load: Callable[[], T]
    origin: str  # "module:attr" of an entry point, or a file path


class Registry(Generic[T]):
    """Names -> lazily loaded objects, from an entry-point group plus any extra sources."""

    def __init__(self, kind: str, group: str, extra: Callable[[], dict[str, Entry[T]]] | None = None):
        self.kind = kind  # "method", "task", ... used in messages
        self.group = group
        self._extra = extra
        self._entries: dict[str, Entry[T]] | None = None
        self._loaded: dict[str, T] = {}

    def entries(self) -> dict[str, Entry[T]]:
        if self._entries is None:
            found: dict[str, Entry[T]] = {}
            if self._extra is not None:
                found.update(self._extra())
            for ep in entry_points(group=self.group):
                found[ep.name] = Entry(ep.name, ep.load, ep.value)
            self._entries = dict(sorted(found.items()))
        return self._entries

    def names(self) -> list[str]:
        return list(self.entries())

    def get(self, name: str) -> T:
        if name not in self._loaded:
            entries = self.entries()
            if name not in entries:
                raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(entries) or '(none registered)'}")
            self._loaded[name] = entries[name].load()
        return self._loaded[name]

    def refresh(self) -> None:
        """Forget cached entries (after installing a plugin in the same process)."""
        self._entries = None
        self._loaded.clear()


def describe(obj: Any) -> str:
    """First line of a component's description (its ``description`` or docstring)."""
    text = getattr(obj, "description", None) or (obj.__doc__ or "")
    return text.strip().splitlines()[0] if text.strip() else ""


def _builtin_task_cards() -> dict[str, Entry]:
    from pflbench.data.cards import builtin_card_entries

    return builtin_card_entries()


def _builtin_channel_cards() -> dict[str, Entry]:
    from pflbench.channel.cards import builtin_channel_entries

    return builtin_channel_entries()


methods: Registry = Registry("method", "pflbench.methods")
tasks: Registry = Registry("task", "pflbench.tasks", extra=_builtin_task_cards)
channels: Registry = Registry("channel", "pflbench.channels", extra=_builtin_channel_cards)
models: Registry = Registry("model", "pflbench.models")
rewards: Registry = Registry("reward", "pflbench.rewards")
