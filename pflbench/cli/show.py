"""``list`` and ``channel show``, ``task show``, ``reward show``: what is registered, and one
component in detail."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from tabulate import tabulate

from pflbench import registry
from pflbench.errors import UserError
from pflbench.registry import describe
from pflbench.cli.common import (
    app, DEFAULT, _payload, _pmethod, _pmodel, _pcodec, _payload_size, _err, _Progress,
    _data_dir, _use_data_dir, _json,
)


# The suite's engine, orchestration and results are imported inside the commands: they load
# torch (and matplotlib), which `pflbench --help` and `pflbench list` do without.


channel_app = typer.Typer(help="Inspect channel presets and cards.", no_args_is_help=True)
app.add_typer(channel_app, name="channel")


@channel_app.command("show")
def channel_show(
    name: str = typer.Argument(..., help="preset name, or a path to a channel card (.yaml)"),
    payload_bytes: Optional[int] = _payload, method: Optional[str] = _pmethod, model: str = _pmodel, codec: str = _pcodec,
    clients: int = typer.Option(8, help="clients sharing a round"),
    rounds: int = typer.Option(500, help="simulated rounds (placements and fading draws)"),
    plot: Optional[Path] = typer.Option(None, help="draw the distributions to this PNG file"),
    as_json: bool = _json,
) -> None:
    """Print a channel's parameters and the distribution of rate, airtime, energy and delivery."""
    import dataclasses

    from pflbench.channel.base import link_statistics
    from pflbench.channel.cards import resolve_channel

    if clients <= 0 or rounds <= 0:
        raise UserError("--clients and --rounds must be positive")
    channel = resolve_channel(name)
    payload_bytes = _payload_size(payload_bytes, method, model, codec)
    sim = channel.simulate(payload_bytes, clients, rounds=rounds)
    params = dataclasses.asdict(channel.p) if hasattr(channel, "p") else {"name": channel.name}
    stats = link_statistics(sim)
    if as_json:
        print(json.dumps({"name": channel.name, "card": getattr(channel, "card", None), "parameters": params, "stats": stats}, default=str))
    else:
        print(f"{channel.name}: {channel.description}")
        if getattr(channel, "card", None):
            print(f"card: {channel.card}  (copy it, edit it, pass --channel your-card.yaml)")
        print(tabulate([[k, v] for k, v in params.items() if k not in ("name", "description")], tablefmt="simple"))
        print(f"\n{payload_bytes} bytes per client, {clients} clients a round, {rounds * clients} client-rounds:")
        print(tabulate([[k, *(f"{x:.4g}" for x in v.values())] for k, v in stats.items() if "delivery" not in k],
                       headers=["", "p10", "median", "p90"], tablefmt="simple"))
        d = stats["delivery probability"]
        print(f"delivery probability: mean {d['mean']:.3f}, p10 {d['p10']:.3f}")
    if plot is not None:
        from pflbench.results.plots import channel_histograms

        channel_histograms(channel.name, sim, plot)
        _err(f"plot: {plot}")


task_app = typer.Typer(help="Inspect task cards and their partitions.", no_args_is_help=True)
app.add_typer(task_app, name="task")


@task_app.command("show")
def task_show(
    name: str = typer.Argument(..., help="registered task, or a path to a task card (.yaml)"),
    clients: Optional[int] = typer.Option(None, help=f"number of clients (default: the card's, else {DEFAULT.clients})"),
    seed: int = typer.Option(DEFAULT.seed, help="partition seed"),
    plot: Optional[Path] = typer.Option(None, help="draw client sizes and label shares to this PNG file"),
    data_dir: Optional[Path] = _data_dir,
    as_json: bool = _json,
) -> None:
    """Print a task's card and its per-client sizes and label skew."""
    from pflbench.data.cards import resolve_task
    from pflbench.data.partition import label_key, partition, skew

    _use_data_dir(data_dir)
    task = resolve_task(name)
    clients = clients if clients is not None else task.defaults.get("clients", DEFAULT.clients)
    if clients <= 0:
        raise UserError("--clients must be a positive integer")
    groups = partition(task, task.records(), clients, seed)
    key = label_key(task)
    rows, shares = [], []
    values = sorted({str(r[key]) for _, g in groups for r in g}) if key else []
    for cname, g in groups:
        counts = [sum(str(r[key]) == v for r in g) for v in values]
        shares.append([c / len(g) for c in counts])
        row = {"client": cname, "examples": len(g), **({v: c for v, c in zip(values, counts)} if len(values) <= 12 else {})}
        if task.kind == "reward":  # each client's mixture over the card's reward models
            row.update({f"w_{role}": round(w, 3) for role, w in task.client_weights(cname, g, seed).items()})
        rows.append(row)
    # every template rendered on each client's first record, as a run renders it: a template
    # that does not fit the records fails here with the run's own line, before any model
    examples = {cname: task.render(g[0]) for cname, g in groups}
    summary = {"task": task.name, "kind": task.kind, "metric": task.metric, "partition": task.partition,
               "defaults": task.defaults, "clients": rows, "examples": examples,
               "label_key": key, "label_skew_tv": skew(shares) if key else None}
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        print(f"{task.name} ({task.kind}, metric {task.metric}): {task.description}")
        print(f"partition {json.dumps(task.partition)}, seed {seed}; card: {task.origin}")
        print(f"recommended budget (card defaults, used where no flag is given): {_defaults_text(task.defaults)}")
        if task.kind == "reward":
            print(f"reward models: {_defaults_text(task.rewards)}; each client's weights w_ROLE: mixture {json.dumps(task.mixture)}")
        print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]), tablefmt="simple"))
        if key:
            print(f"label skew ({key}): mean total-variation distance from the pooled label shares = {summary['label_skew_tv']:.3f}")
        print("one rendered example per client (its first record):")
        for cname, texts in examples.items():
            print(f"  {cname}: " + "; ".join(f"{k} {v!r}"[:160] for k, v in texts.items()))
    if plot is not None:
        from pflbench.results.plots import task_partition

        task_partition(task.name, groups, values, shares, plot)
        _err(f"plot: {plot}")


reward_app = typer.Typer(help="Inspect reward models.", no_args_is_help=True)
app.add_typer(reward_app, name="reward")


@reward_app.command("show")
def reward_show(
    name: str = typer.Argument(..., help="registered reward (see `pflbench list rewards`), or a Hugging Face id or path"),
    as_json: bool = _json,
) -> None:
    """Load a reward model (training and caching it on first use) and print what it is, and
    for a trained one its held-out preference accuracy."""
    from pflbench.rewards import resolve_reward

    info = resolve_reward(name, progress=_Progress(name, 0).build).info()
    if as_json:
        print(json.dumps(info, sort_keys=True))
    else:
        print(tabulate([[k, v] for k, v in info.items()], tablefmt="simple"))


class What(str, Enum):
    methods = "methods"
    tasks = "tasks"
    channels = "channels"
    schedulers = "schedulers"
    models = "models"
    rewards = "rewards"


@app.command("list")
def list_(
    what: What = typer.Argument(..., help="methods, tasks, channels, schedulers, models or rewards"),
    payload_bytes: Optional[int] = _payload, method: Optional[str] = _pmethod, model: str = _pmodel, codec: str = _pcodec,
    clients: int = typer.Option(8, help="channels: clients sharing a round"),
    as_json: bool = _json,
) -> None:
    """List what is registered, with a line of description each (channels: with their median
    rate and airtime for a payload)."""
    if clients <= 0:
        raise UserError("--clients must be positive")
    if what is What.channels:
        payload_bytes = _payload_size(payload_bytes, method, model, codec)
        _err(f"payload: {payload_bytes} bytes per client, {clients} clients a round")
    rows = []
    reg = getattr(registry, what.value)
    for name, entry in reg.entries().items():
        try:
            row = _describe(what, name, payload_bytes, clients)
        except UserError as exc:  # a broken plugin is listed as such; the rest still work
            row = {"name": name, "description": f"BROKEN: {exc}"}
        rows.append({"name": name, "package": entry.package, **row})  # where each entry comes from
    if as_json:
        print(json.dumps(rows, sort_keys=True))
    else:
        headers = list(dict.fromkeys(k for r in rows for k in r))
        print(tabulate([[r.get(h, "") for h in headers] for r in rows], headers=headers, tablefmt="simple"))


def _describe(what: What, name: str, payload_bytes: int, clients: int) -> dict[str, Any]:
    import dataclasses

    if what is What.channels:
        from pflbench.channel.base import link_statistics
        from pflbench.channel.cards import resolve_channel

        channel = resolve_channel(name)
        stats = link_statistics(channel.simulate(payload_bytes, clients, rounds=100))
        rate = stats["rate (Mbit/s)"]["p50"]
        return {
            "name": name,
            "median rate Mbit/s": "unlimited" if rate == float("inf") else round(rate, 2),
            "median airtime s": round(stats["airtime (s)"]["p50"], 3),
            "delivery": round(stats["delivery probability"]["mean"], 3),
            "description": describe(channel),
        }
    if what is What.tasks:
        from pflbench.data.cards import resolve_task
        from pflbench.data.sources import available_offline, describe_source

        t = resolve_task(name)
        return {"name": name, "kind": t.kind, "source": describe_source(t.source), "metric": t.metric,
                "offline": "yes" if available_offline(t.name, t.source) else "no (hub or --data-dir)",
                "defaults": _defaults_text(t.defaults), "description": t.description}
    obj = getattr(registry, what.value).get(name)
    row = {"name": name, "description": describe(obj)}
    if what is What.rewards:
        from pflbench.rewards import TrainedReward

        trained = isinstance(obj, type) and issubclass(obj, TrainedReward)
        row = {"name": name, "kind": "trained" if trained else "rule", "backbone": obj.backbone if trained else "-",
               "description": describe(obj)}
    if what is What.models:
        from pflbench.models import describe_size

        source = obj()
        row = {"name": name, "parameters": describe_size(source.parameters), "licence": source.licence,
               "offline": "yes" if source.offline() else f"no ({getattr(source, 'install', '') or 'see its docs'})",
               "description": describe(obj)}
    if what is What.methods:
        row["options"] = ", ".join(f"{f.name}={f.default if not isinstance(f.default, tuple) else ','.join(f.default) or 'auto'}"
                                   for f in dataclasses.fields(obj.Options))
    return row


def _defaults_text(defaults: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in defaults.items()) or "-"
