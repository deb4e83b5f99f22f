"""One registry type for everything that plugs in: methods, tasks, channels, schedulers, models, rewards.

Entries come from Python entry-point groups (``pflbench.methods``, ``pflbench.tasks``,
``pflbench.channels``, ``pflbench.schedulers``, ``pflbench.models``, ``pflbench.rewards``), so a separately installed package adds a
method without touching this repository. The suite's own components are registered the
same way, in its ``pyproject.toml``, and so are the two hooks a kind may have: a *source*
(group ``pflbench.sources``, named by kind: a function returning many entries at once, as
the built-in task and channel cards do) and a *check* run on each loaded object (group
``pflbench.checks``: the method interface's). This module imports nothing of the suite above
itself: everything it lists is found by name.
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

    def __init__(self, kind: str, group: str):
        self.kind = kind  # "method", "task", ... used in messages; names its source and check entry points
        self.group = group
        self._entries: dict[str, Entry[T]] | None = None
        self._loaded: dict[str, T] = {}
        self.conflicts: dict[str, list[str]] = {}  # name -> every package registering it, when several do

    def entries(self) -> dict[str, Entry[T]]:
        """Every entry by name. A name registered by several packages is decided one way
        everywhere (list, run, bench, sweep): a built-in keeps its bare name; every plugin that
        registers it is reachable as ``PACKAGE:NAME``; a name two plugins share (no built-in)
        has only the qualified forms. One warning line per such name, on first use."""
        if self._entries is None:
            by_name: dict[str, list[Entry[T]]] = {}
            for source in entry_points(group="pflbench.sources", name=self.kind):
                package = source.dist.name if source.dist is not None else "?"
                for entry in source.load()().values():
                    by_name.setdefault(entry.name, []).append(Entry(entry.name, entry.load, entry.origin, package))
            for ep in entry_points(group=self.group):
                package = ep.dist.name if ep.dist is not None else "?"
                same = by_name.setdefault(ep.name, [])
                if all(e.package != package for e in same):  # one package's duplicate counts once
                    same.append(Entry(ep.name, ep.load, ep.value, package))
            found: dict[str, Entry[T]] = {}
            for name, entries in by_name.items():
                if len(entries) == 1:
                    found[name] = entries[0]
                    continue
                entries.sort(key=lambda e: (e.package != BUILTIN, e.package))
                self.conflicts[name] = [e.package for e in entries]
                builtin = entries[0] if entries[0].package == BUILTIN else None
                if builtin:
                    found[name] = builtin
                for e in entries:
                    if e is not builtin:
                        found[f"{e.package}:{name}"] = Entry(f"{e.package}:{name}", e.load, e.origin, e.package)
                self._warn(self._clash_line(name))
            self._entries = dict(sorted(found.items()))
        return self._entries

    def _clash_line(self, name: str) -> str:
        packages = self.conflicts[name]
        plugins = ", ".join(f"{p}:{name}" for p in packages if p != BUILTIN)
        if packages[0] == BUILTIN:
            return f"warning: {self.kind} {name!r} is built in and also registered by {', '.join(packages[1:])}: " \
                   f"'{name}' is the built-in, the plugin's is {plugins}"
        return f"warning: {self.kind} {name!r} is registered by {', '.join(packages)}: choose {plugins}"

    @staticmethod
    def _warn(line: str) -> None:
        import sys

        print(line, file=sys.stderr)

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
                if name in self.conflicts:  # two plugins, no built-in: the qualified names only
                    raise UserError(f"{self.kind} {name!r} is registered by several packages; choose one of: "
                                    f"{', '.join(f'{p}:{name}' for p in self.conflicts[name])}")
                raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(entries) or '(none registered)'}")
            entry = entries[name]
            try:
                obj = entry.load()
            except Exception as exc:  # a broken plugin must not take the rest down
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise UserError(f"{self.kind} {name!r} (package {entry.package}, entry point {entry.origin}) failed to load: "
                                f"{type(exc).__name__}{': ' + first if first else ''}") from None
            for check in self._checks():
                check(obj, name, entry.package)
            self._loaded[name] = obj
        return self._loaded[name]

    def _checks(self) -> list[Callable[[Any, str, str], None]]:
        """check(obj, name, package) on load, a UserError for an entry that cannot work: the
        suite's own only (a plugin cannot loosen what a method must be)."""
        return [ep.load() for ep in entry_points(group="pflbench.checks", name=self.kind)
                if ep.dist is not None and ep.dist.name == BUILTIN]

    def refresh(self) -> None:
        """Forget cached entries (after installing a plugin in the same process)."""
        self._entries = None
        self._loaded.clear()
        self.conflicts.clear()


def describe(obj: Any) -> str:
    """First line of a component's description (its ``description`` or docstring)."""
    text = getattr(obj, "description", None) or (obj.__doc__ or "")
    return text.strip().splitlines()[0] if text.strip() else ""


methods: Registry = Registry("method", "pflbench.methods")
tasks: Registry = Registry("task", "pflbench.tasks")
channels: Registry = Registry("channel", "pflbench.channels")
models: Registry = Registry("model", "pflbench.models")
rewards: Registry = Registry("reward", "pflbench.rewards")
metrics: Registry = Registry("metric", "pflbench.metrics")
schedulers: Registry = Registry("scheduler", "pflbench.schedulers")
