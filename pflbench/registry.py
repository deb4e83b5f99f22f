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
    package: str = "pflbench"  # the distribution that registered it


BUILTIN = "pflbench"


class Registry(Generic[T]):
    """Names -> lazily loaded objects, from an entry-point group plus any extra sources."""

    def __init__(self, kind: str, group: str, extra: Callable[[], dict[str, Entry[T]]] | None = None):
        self.kind = kind  # "method", "task", ... used in messages
        self.group = group
        self._extra = extra
        self._entries: dict[str, Entry[T]] | None = None
        self._loaded: dict[str, T] = {}
        self.conflicts: dict[str, list[str]] = {}  # name -> every package registering it, when several do

    def entries(self) -> dict[str, Entry[T]]:
        if self._entries is None:
            found: dict[str, Entry[T]] = {}
            if self._extra is not None:
                found.update(self._extra())
            for ep in entry_points(group=self.group):
                package = ep.dist.name if ep.dist is not None else "?"
                entry = Entry(ep.name, ep.load, ep.value, package)
                if ep.name in found and found[ep.name].package != package:
                    # never resolved silently: the built-in one stays, and using the name is an error
                    self.conflicts.setdefault(ep.name, [found[ep.name].package]).append(package)
                    if found[ep.name].package == BUILTIN:
                        continue
                found[ep.name] = entry
            self._entries = dict(sorted(found.items()))
        return self._entries

    def names(self) -> list[str]:
        return list(self.entries())

    def usable(self, names: list[str] | None = None, warn: Callable[[str], None] | None = None) -> list[str]:
        """``names``, each checked to load (a typo fails here, before any work); or, with none
        given, every registered one that loads, a broken plugin named through ``warn`` and left out."""
        if names is not None:
            for name in names:
                self.get(name)
            return list(names)
        out = []
        for name in self.names():
            try:
                self.get(name)
                out.append(name)
            except UserError as exc:
                if warn:
                    warn(f"warning: left out: {exc}")
        return out

    def get(self, name: str) -> T:
        if name not in self._loaded:
            entries = self.entries()
            if name not in entries:
                raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(entries) or '(none registered)'}")
            if name in self.conflicts:
                raise UserError(f"{self.kind} {name!r} is registered by several packages ({', '.join(self.conflicts[name])}); "
                                f"a plugin cannot take another's name: uninstall one or rename its entry point")
            entry = entries[name]
            try:
                self._loaded[name] = entry.load()
            except Exception as exc:  # a broken plugin must not take the rest down
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise UserError(f"{self.kind} {name!r} (package {entry.package}, entry point {entry.origin}) failed to load: "
                                f"{type(exc).__name__}{': ' + first if first else ''}") from None
        return self._loaded[name]

    def refresh(self) -> None:
        """Forget cached entries (after installing a plugin in the same process)."""
        self._entries = None
        self._loaded.clear()
        self.conflicts.clear()


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
