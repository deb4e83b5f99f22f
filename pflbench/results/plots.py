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


# ---- report figures (``pflbench report``) -------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(row: dict[str, Any], varying: list[str]) -> str:
    extra = ",".join(f"{row[k]}" for k in varying if k != "method" and str(row[k]) not in ("{}", ""))
    return row["method"] + (f" ({extra})" if extra else "")


def _by_task(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append(r)
    return out


def _varying(rows: list[dict[str, Any]]) -> list[str]:
    keys = ("channel", "codec", "model", "lr", "method_options", "clients_per_round", "rounds", "local_steps")
    return [k for k in keys if len({str(r[k]) for r in rows}) > 1]


def _err(row: dict[str, Any], key: str) -> float:
    lo, hi = row.get(f"{key}_low"), row.get(f"{key}_high")
    return 0.0 if lo is None or hi is None else (hi - lo) / 2


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats on both counts (fewer uplink bytes and a higher score),
    in order of bytes."""
    front, best = [], float("-inf")
    for r in sorted(rows, key=lambda r: (r["uplink_bytes"], -r["score"])):
        if r["score"] > best:
            front.append(r)
            best = r["score"]
    return front


def score_vs_uplink(rows: list[dict[str, Any]], path: Path) -> None:
    """Per task: each method's score (mean, 95% interval over seeds) against its uplink bytes
    per run, the Pareto front joined by a line; methods that send nothing sit at the left edge."""
    plt = _pyplot()
    tasks = _by_task(rows)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, (task, rs) in zip(axes[0], tasks.items()):
        varying = _varying(rs)
        sent = [r["uplink_bytes"] for r in rs if r["uplink_bytes"] > 0]
        floor = min(sent) / 10 if sent else 1.0
        x = lambda r: r["uplink_bytes"] if r["uplink_bytes"] > 0 else floor  # noqa: E731
        for r in rs:
            ax.errorbar(x(r), r["score"], yerr=_err(r, "score"), fmt="o", capsize=3)
            ax.annotate(_label(r, varying), (x(r), r["score"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        front = pareto_front(rs)
        ax.plot([x(r) for r in front], [r["score"] for r in front], "--", color="grey", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(f"uplink bytes per run (0 bytes drawn at {floor:.3g})")
        ax.set_ylabel(f"score ({rs[0]['metric']})")
        ax.set_title(task)
        ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, "Score against uplink bytes (95% intervals over seeds)", path)


def client_scores(records: list[dict[str, Any]], path: Path) -> None:
    """Per task: the distribution of per-client scores of each method's deployed models (last
    evaluation, every client and seed), as box plots."""
    plt = _pyplot()
    per: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        last = next(r["eval"] for r in reversed(rec["rounds"]) if r["eval"] is not None)
        per.setdefault(rec["spec"]["task"], {}).setdefault(rec["spec"]["method"], []).extend(c["personal"] for c in last["clients"])
    fig, axes = plt.subplots(1, len(per), figsize=(6 * len(per), 4.2), squeeze=False)
    for ax, (task, methods) in zip(axes[0], sorted(per.items())):
        names = sorted(methods)
        ax.boxplot([methods[m] for m in names], tick_labels=names, vert=True)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.set_ylabel("client score")
        ax.set_title(task)
    save_figure(fig, "Per-client scores (every client and seed)", path)


def score_by_round(records: list[dict[str, Any]], path: Path) -> bool:
    """Per task: mean score over seeds at each evaluated round, a line per method. False (no
    figure) when no run was evaluated at more than one round (``--eval-every``)."""
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for rec in records:
        evals = [(r["round"], r["eval"]["score"]) for r in rec["rounds"] if r["eval"] is not None]
        if len(evals) > 1:
            for rnd, score in evals:
                curves.setdefault(rec["spec"]["task"], {}).setdefault(rec["spec"]["method"], {}).setdefault(rnd, []).append(score)
    if not curves:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (task, methods) in zip(axes[0], sorted(curves.items())):
        for m, pts in sorted(methods.items()):
            rounds = sorted(pts)
            ax.plot(rounds, [sum(pts[r]) / len(pts[r]) for r in rounds], marker=".", label=m)
        ax.set_xlabel("round")
        ax.set_ylabel("score (mean over seeds)")
        ax.set_title(task)
        ax.legend(fontsize=7)
    save_figure(fig, "Score by round", path)
    return True


def gains(rows: list[dict[str, Any]], path: Path) -> bool:
    """Per task: personalization gain against collaboration gain (the row minus local-only),
    one point per method with 95% intervals. False when no local-only runs pair with the rows."""
    tasks = {t: [r for r in rs if r.get("delta_local_only") is not None] for t, rs in _by_task(rows).items()}
    tasks = {t: rs for t, rs in tasks.items() if rs}
    if not tasks:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, (task, rs) in zip(axes[0], tasks.items()):
        varying = _varying(rs)
        for r in rs:
            ax.errorbar(r["personalization_gain"], r["delta_local_only"], xerr=_err(r, "personalization_gain"),
                        yerr=_err(r, "delta_local_only"), fmt="o", capsize=3)
            ax.annotate(_label(r, varying), (r["personalization_gain"], r["delta_local_only"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("personalization gain (points)")
        ax.set_ylabel("collaboration gain: minus local-only (points)")
        ax.set_title(task)
    save_figure(fig, "Personalization against collaboration (95% intervals over seeds)", path)
    return True


def channel_costs(rows: list[dict[str, Any]], path: Path) -> bool:
    """Airtime, energy and lost-or-late updates per run, by channel, a bar per method (means
    over seeds, every task). False when the records hold a single channel."""
    channels = sorted({r["channel"] for r in rows})
    if len(channels) < 2:
        return False
    import numpy as np

    plt = _pyplot()
    methods = sorted({r["method"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.2))
    width = 0.8 / len(methods)
    for ax, (key, label) in zip(axes, (("airtime_s", "airtime per run (s)"), ("energy_j", "energy per run (J)"),
                                       ("lost", "lost or late updates per run"))):
        for i, m in enumerate(methods):
            vals = []
            for ch in channels:
                rs = [r for r in rows if r["method"] == m and r["channel"] == ch]
                v = [(r["lost_updates"] + r["late_updates"]) if key == "lost" else r[key] for r in rs]
                vals.append(sum(v) / len(v) if v else 0.0)
            ax.bar(np.arange(len(channels)) + i * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(channels)) + 0.4 - width / 2, channels, rotation=30, fontsize=8)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=6, ncol=2)
    save_figure(fig, "What each channel costs (means over tasks and seeds)", path)
    return True
