"""Figures drawn from run records (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pflbench.errors import UserError


def save_figure(fig, title: str, path: Path, tight: bool = True) -> None:
    """Write ``fig`` as a PNG (one line on failure) and close it; ``tight=False`` keeps a
    layout already set (a colorbar beside the panels)."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    if tight:
        fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UserError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _roles(task: dict[str, Any]) -> list[str]:
    """The card's reward roles in its order (records keep it in ``roles``)."""
    return list(task.get("roles") or task.get("rewards", {}))


def reward_points(records: list[dict[str, Any]]) -> dict[str, list[tuple[float, float, float]]]:
    """For records of reward tasks with two reward roles: per method (and ``base``, the
    untrained policy), one (first role's points, second role's points, first role's weight)
    per client and seed, from the last evaluation."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    based: set[tuple[str, int]] = set()  # the base policy is the same for every method of a (task, seed)
    for rec in records:
        task = rec.get("task", {})
        roles = _roles(task)
        if task.get("kind") != "reward" or len(roles) != 2:
            continue
        last = next(r["eval"] for r in reversed(rec["rounds"]) if r["eval"] is not None)
        panels = [(rec["spec"]["method"], last["clients"])]
        if (task["name"], rec["spec"]["seed"]) not in based:
            based.add((task["name"], rec["spec"]["seed"]))
            panels.append(("base", rec["reference"]["base"]["clients"]))
        for label, clients in panels:
            for c in clients:
                d, w = c["diagnostics"], task["weights"][c["client"]]
                if d.get(roles[0]) is not None and d.get(roles[1]) is not None:
                    out.setdefault(label, []).append((d[roles[0]], d[roles[1]], w[roles[0]]))
    return out


def reward_scatter(records: list[dict[str, Any]], path: Path) -> None:
    """Each client's first-role reward (helpfulness) against its second (harmlessness), one
    panel per method, coloured by the client's weight on the first role."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = reward_points(records)
    if not points:
        raise UserError("no records of a reward task with two reward models to plot")
    roles = next(_roles(r["task"]) for r in records if r.get("task", {}).get("kind") == "reward")
    names = ["base"] + sorted(k for k in points if k != "base")
    fig, axes = plt.subplots(1, len(names), figsize=(2.9 * len(names) + 1.2, 3.4), squeeze=False, sharex=True, sharey=True)
    fig.subplots_adjust(left=0.06, right=0.9, bottom=0.18, top=0.8, wspace=0.08)
    for ax, name in zip(axes[0], names):
        xs, ys, ws = zip(*points.get(name, [(float("nan"), float("nan"), 0.5)]))
        sc = ax.scatter(xs, ys, c=ws, cmap="viridis", vmin=0, vmax=1, s=18)
        ax.set_title(name)
        ax.set_xlabel(f"{roles[0]} (points)")
    axes[0][0].set_ylabel(f"{roles[1]} (points)")
    fig.colorbar(sc, ax=axes[0].tolist(), label=f"client's weight on {roles[0]}")
    tasks = sorted({r["task"]["name"] for r in records if r.get("task", {}).get("kind") == "reward"})
    save_figure(fig, f"{', '.join(tasks)}: each client's rewards (every seed)", path, tight=False)


def channel_histograms(name: str, sim: dict, path: Path) -> None:
    """Histograms of rate, airtime, energy and delivery probability over simulated client-rounds
    (``Channel.simulate``); airtime and energy on a log axis when heavy-tailed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, (key, label, scale) in zip(axes, (("rate_bps", "rate (Mbit/s)", 1e-6), ("airtime_s", "airtime (s)", 1),
                                             ("energy_j", "energy (J)", 1), ("delivery_prob", "delivery probability", 1))):
        v = sim[key] * scale
        v = v[np.isfinite(v)]
        heavy_tailed = key in ("airtime_s", "energy_j") and v.size and v.min() > 0 and v.max() / v.min() > 100
        bins = np.logspace(np.log10(v.min()), np.log10(v.max()), 40) if heavy_tailed else 40
        ax.hist(v, bins=bins, color="#3b6ea5")
        if heavy_tailed:
            ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylabel("client-rounds")
    save_figure(fig, name, path)


def task_partition(name: str, groups: list, values: list[str], shares: list[list[float]], path: Path) -> None:
    """Examples per client and, for label tasks, each client's label shares (stacked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2 if values else 1, figsize=(12 if values else 6, 3.5), squeeze=False)
    axes[0][0].bar(range(len(groups)), [len(g) for _, g in groups], color="#3b6ea5")
    axes[0][0].set_xlabel("client")
    axes[0][0].set_ylabel("examples")
    if values:
        bottom = np.zeros(len(groups))
        for j, v in enumerate(values[:12]):
            col = np.array([s[j] for s in shares])
            axes[0][1].bar(range(len(groups)), col, bottom=bottom, label=v)
            bottom += col
        axes[0][1].set_xlabel("client")
        axes[0][1].set_ylabel("label share")
        axes[0][1].legend(fontsize=7, ncol=2)
    save_figure(fig, name, path)
