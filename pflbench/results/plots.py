"""Figures drawn from run records (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pflbench import registry
from pflbench.errors import UserError
from pflbench.results.table import human_bytes


def save_figure(fig, title: str | None, path: Path, tight: bool = True) -> None:
    """Write ``fig`` as a PNG (one line on failure) and close it, under ``title`` (None: the
    figure has its own); ``tight=False`` keeps a layout already set (a colorbar beside the
    panels, or matplotlib's constrained layout)."""
    import matplotlib.pyplot as plt

    if title is not None:
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
    cols = min(len(names), 5)  # a grid, not one row: the full board has 15 panels
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 1.2, 2.9 * rows + 0.8), squeeze=False, sharex=True, sharey=True)
    fig.subplots_adjust(left=0.08, right=0.86, bottom=0.5 / (2.9 * rows + 0.8) + 0.06, top=1 - 0.8 / (2.9 * rows + 0.8),
                        wspace=0.08, hspace=0.3)
    flat = axes.ravel()
    for ax, name in zip(flat, names):
        xs, ys, ws = zip(*points.get(name, [(float("nan"), float("nan"), 0.5)]))
        sc = ax.scatter(xs, ys, c=ws, cmap="viridis", vmin=0, vmax=1, s=18)
        ax.set_title(name)
    for ax in flat[len(names):]:
        ax.set_visible(False)
    for i, ax in enumerate(flat[:len(names)]):
        if i + cols >= len(names):  # nothing below it: the bottom of its column
            ax.set_xlabel(f"{roles[0]} (points)")
            ax.xaxis.set_tick_params(labelbottom=True)
        if i % cols == 0:
            ax.set_ylabel(f"{roles[1]} (points)")
    fig.colorbar(sc, ax=flat.tolist(), label=f"client's weight on {roles[0]}")
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
# One colour and one marker per method, the same in every figure and report. The built-in
# methods have fixed entries; plugins take the extra palette's slots in the order of their names
# among the installed plugins (so every registered method has its own colour), and a method
# no longer installed (read from old records) a slot from a hash of its name.
METHOD_STYLE: dict[str, tuple[str, str]] = {
    "pftt": ("#d62728", "*"), "pfit": ("#1f77b4", "P"), "local-only": ("#2ca02c", "s"),
    "fedavg-lora": ("#ff7f0e", "o"), "fedavg-full": ("#8c564b", "D"), "central": ("#7f7f7f", "X"),
    "ditto": ("#9467bd", "v"), "fedper-lora": ("#17becf", "^"), "fedrep-lora": ("#bcbd22", "<"),
    "fedsa-lora": ("#e377c2", ">"), "ffa-lora": ("#393b79", "h"), "feddpa": ("#637939", "p"),
    "fedprox": ("#ad494a", "d"), "scaffold-lora": ("#e7ba52", "8"), "base": ("#000000", "_"),
}
EXTRA_COLOURS = ["#6b6ecf", "#b5cf6b", "#ce6dbd", "#843c39", "#9c9ede", "#8ca252", "#de9ed6", "#bd9e39",
                 "#7b4173", "#e7969c", "#5254a3", "#d6616b", "#a55194", "#cedb9c", "#3182bd", "#31a354"]
EXTRA_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker) of ``method``, fixed across every figure (see METHOD_STYLE)."""
    if method in METHOD_STYLE:
        return METHOD_STYLE[method]
    try:
        plugins = sorted(n for n in registry.methods.names() if n not in METHOD_STYLE)
    except Exception:  # noqa: BLE001 - a broken plugin must not stop a figure of old records
        plugins = []
    import zlib

    slot = plugins.index(method) if method in plugins else zlib.crc32(method.encode()) % (len(EXTRA_COLOURS) * len(EXTRA_MARKERS))
    return EXTRA_COLOURS[slot % len(EXTRA_COLOURS)], EXTRA_MARKERS[(slot // len(EXTRA_COLOURS) + slot) % len(EXTRA_MARKERS)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_task(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append(r)
    return out


def _err(row: dict[str, Any], key: str) -> float:
    lo, hi = row.get(f"{key}_low"), row.get(f"{key}_high")
    return 0.0 if lo is None or hi is None else (hi - lo) / 2


VARIANT_KEYS = ("codec", "model", "lr", "method_options", "clients_per_round", "rounds", "local_steps")


def _labels(rows: list[dict[str, Any]]) -> dict[int, str]:
    """Per row (by id): its method, plus the settings that tell it from the method's other rows
    in ``rows`` (a method run with one lr everywhere is just its name)."""
    out = {}
    for r in rows:
        same = [o for o in rows if o["method"] == r["method"]]
        extra = ",".join(str(r[k]) for k in VARIANT_KEYS if len({str(o[k]) for o in same}) > 1 and str(r[k]) not in ("{}", ""))
        out[id(r)] = r["method"] + (f" ({extra})" if extra else "")
    return out


def _styles(rows: list[dict[str, Any]], labels: dict[int, str]) -> dict[str, dict[str, Any]]:
    """Per label: its method's colour and marker; a method's second and later variants (another
    codec, lr, option ...) keep its colour with other markers, drawn hollow."""
    out: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: labels[id(r)]):
        label = labels[id(r)]
        if label in out:
            continue
        colour, marker = method_style(r["method"])
        k = seen.get(r["method"], 0)
        seen[r["method"]] = k + 1
        if k:
            marker = EXTRA_MARKERS[(EXTRA_MARKERS.index(marker) + k) % len(EXTRA_MARKERS)] if marker in EXTRA_MARKERS else EXTRA_MARKERS[k]
        out[label] = {"color": colour, "marker": marker, "mfc": "white" if k else colour, "ms": 9 if marker in "*P" else 7}
    return out


def _legend(fig, handles: dict[str, Any]) -> None:
    """One legend for the whole figure, under the panels (every panel shares the styles; beside
    them it would run into the title)."""
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 7), fontsize=8,
                   frameon=False)


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats on both counts (fewer uplink bytes and a higher score),
    in order of bytes."""
    front, best = [], float("-inf")
    for r in sorted(rows, key=lambda r: (r["uplink_bytes"], -r["score"])):
        if r["score"] > best:
            front.append(r)
            best = r["score"]
    return front


def _panels(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(title, rows) per task, and per channel where the rows hold several: overlaying channels
    buries the points."""
    out = []
    for task, rs in _by_task(rows).items():
        channels = sorted({r["channel"] for r in rs})
        if len(channels) == 1:
            out.append((task, rs))
        else:
            out.extend((f"{task}, {ch}", [r for r in rs if r["channel"] == ch]) for ch in channels)
    return out


def _grid(plt, n: int, w: float, h: float, cols_max: int = 4):
    cols = min(n, cols_max)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols + 2.6, h * rows + 0.6), squeeze=False, layout="constrained")
    flat = [a for line in axes for a in line]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _zero_and_top(values: list[float]) -> tuple[float, float]:
    """Where "0 B" sits on a log axis of bytes (one decade left of the smallest decade drawn)
    and the largest value."""
    sent = [v for v in values if v > 0]
    decade = 10 ** math.floor(math.log10(min(sent))) if sent else 1.0
    return decade / 10, (max(sent) if sent else 10.0)


def _log_bytes_axis(ax, zero: float, top: float) -> None:
    """A log x axis of bytes up to ``top``, with a tick labelled "0 B" at ``zero`` past a
    dotted break line (no "0 bytes drawn at 2.95e+04")."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(zero / 2, top * 2)
    decades = [10 ** k for k in range(int(round(math.log10(zero * 10))), int(math.log10(top * 2)) + 1)]
    if len(decades) > 4:
        decades = decades[::2]
    ax.xaxis.set_major_locator(FixedLocator([zero, *decades]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos, z=zero: "0 B" if math.isclose(v, z) else human_bytes(v)))
    ax.xaxis.set_minor_locator(LogLocator(subs="auto"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(zero * 3.2, color="grey", lw=0.8, ls=":")


def draw_score_vs_uplink(rows: list[dict[str, Any]]):
    """The figure of ``score_vs_uplink``."""
    plt = _pyplot()
    panels = _panels(rows)
    fig, axes = _grid(plt, len(panels), 4.6, 3.6)
    handles: dict[str, Any] = {}
    for ax, (title, rs) in zip(axes, panels):
        labels = _labels(rs)
        styles = _styles(rs, labels)
        zero, top = _zero_and_top([r["uplink_bytes"] for r in rs])  # methods that send nothing sit at "0 B"
        x = lambda r: r["uplink_bytes"] if r["uplink_bytes"] > 0 else zero  # noqa: E731
        for r in sorted(rs, key=lambda r: labels[id(r)]):
            st = styles[labels[id(r)]]
            h = ax.errorbar(x(r), r["score"], yerr=_err(r, "score"), fmt=st["marker"], color=st["color"], mfc=st["mfc"],
                            ms=st["ms"], capsize=3, lw=1)
            handles.setdefault(labels[id(r)], h)
        front = pareto_front(rs)
        h = ax.plot([x(r) for r in front], [r["score"] for r in front], "--", color="grey", lw=1, zorder=0)[0]
        handles.setdefault("Pareto front", h)
        _log_bytes_axis(ax, zero, top)
        ax.set_xlabel("uplink bytes per run (log; 0 B: sends nothing)")
        ax.set_ylabel(f"score ({rs[0]['metric']})")
        ax.set_title(title, fontsize=10)
    _legend(fig, handles)
    fig.suptitle("Score against uplink bytes (95% intervals over seeds)")
    return fig


def score_vs_uplink(rows: list[dict[str, Any]], path: Path) -> None:
    """Per task (and channel): each method's score (mean, 95% interval over seeds) against its
    uplink bytes per run, the Pareto front joined by a line; methods that send nothing sit at
    a marked "0 B" position left of a dotted break."""
    save_figure(draw_score_vs_uplink(rows), None, path, tight=False)


def draw_client_scores(records: list[dict[str, Any]]):
    """The figure of ``client_scores``."""
    plt = _pyplot()
    per: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        last = next(r["eval"] for r in reversed(rec["rounds"]) if r["eval"] is not None)
        per.setdefault(rec["spec"]["task"], {}).setdefault(rec["spec"]["method"], []).extend(c["personal"] for c in last["clients"])
    most = max(len(m) for m in per.values())
    fig, axes = _grid(plt, len(per), max(3.2, 0.55 * most + 1.0), 3.8, cols_max=2)
    for ax, (task, methods) in zip(axes, sorted(per.items())):
        names = sorted(methods)
        box = ax.boxplot([methods[m] for m in names], tick_labels=names, vert=True, patch_artist=True,
                         medianprops={"color": "black"})
        for patch, m in zip(box["boxes"], names):
            patch.set_facecolor(method_style(m)[0])
            patch.set_alpha(0.75)
        if len(names) > 5:
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
            for lab in ax.get_xticklabels():
                lab.set_horizontalalignment("right")
                lab.set_rotation_mode("anchor")
        ax.set_ylabel("client score")
        ax.set_title(task, fontsize=10)
    fig.suptitle("Per-client scores (every client and seed)")
    return fig


def client_scores(records: list[dict[str, Any]], path: Path) -> None:
    """Per task: the distribution of per-client scores of each method's deployed models (last
    evaluation, every client and seed), as box plots in each method's colour."""
    save_figure(draw_client_scores(records), None, path, tight=False)


def draw_score_by_round(records: list[dict[str, Any]]):
    """The figure of ``score_by_round``, or None when no run was evaluated at more than one round."""
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for rec in records:
        evals = [(r["round"], r["eval"]["score"]) for r in rec["rounds"] if r["eval"] is not None]
        if len(evals) > 1:
            for rnd, score in evals:
                curves.setdefault(rec["spec"]["task"], {}).setdefault(rec["spec"]["method"], {}).setdefault(rnd, []).append(score)
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = _grid(plt, len(curves), 4.6, 3.6)
    handles: dict[str, Any] = {}
    for ax, (task, methods) in zip(axes, sorted(curves.items())):
        for m, pts in sorted(methods.items()):
            colour, marker = method_style(m)
            rounds = sorted(pts)
            handles.setdefault(m, ax.plot(rounds, [sum(pts[r]) / len(pts[r]) for r in rounds], marker=marker, color=colour, ms=5)[0])
        ax.set_xlabel("round")
        ax.set_ylabel("score (mean over seeds)")
        ax.set_title(task, fontsize=10)
    _legend(fig, handles)
    fig.suptitle("Score by round")
    return fig


def uplink_curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[str, list[tuple[float, Any]]]]]:
    """Per task, per row (method, plus the wireless settings that vary): at each point of the
    runs' curves (``protocols.curve``: round 0, then every evaluated round), the mean cumulative
    uplink over seeds and the score's ``Estimate`` over seeds. A point is kept only where every
    seed of the row has it. Empty when no run was evaluated at more than its last round."""
    from pflbench.results.protocols import curve, varying_settings
    from pflbench.results.stats import estimate
    from pflbench.results.table import _setting_text, group

    if not any(sum(r["eval"] is not None for r in rec["rounds"]) > 1 for rec in records):
        return {}
    out: dict[str, list[tuple[str, list[tuple[float, Any]]]]] = {}
    for task, rows in group(records).items():
        keys = varying_settings(rows)
        for row in rows:
            per_seed = [{p["round"]: p for p in curve(rec)} for rec in row.records]
            rounds = sorted(set.intersection(*(set(c) for c in per_seed)))
            points = [(sum(c[r]["uplink_bytes"] for c in per_seed) / len(per_seed), estimate([c[r]["score"] for c in per_seed]))
                      for r in rounds]
            label = row.method + "".join(f", {_setting_text(k, row.settings[k])}" for k in keys)
            out.setdefault(task, []).append((label, points))
    return out


def draw_score_vs_cumulative_uplink(records: list[dict[str, Any]]):
    """The figure of ``score_vs_cumulative_uplink``, or None when no run was evaluated at more
    than its last round."""
    curves = uplink_curves(records)
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = _grid(plt, len(curves), 5.2, 3.8)
    handles: dict[str, Any] = {}
    for ax, (task, lines) in zip(axes, sorted(curves.items())):
        zero, top = _zero_and_top([x for _, pts in lines for x, _ in pts])  # nothing sent yet: at "0 B"
        for label, pts in sorted(lines):
            colour, marker = method_style(label.split(",")[0])
            xs = [x if x > 0 else zero for x, _ in pts]
            ys = [e.mean for _, e in pts]
            lo = [e.low if e.n >= 2 else e.mean for _, e in pts]
            hi = [e.high if e.n >= 2 else e.mean for _, e in pts]
            handles.setdefault(label, ax.plot(xs, ys, marker=marker, color=colour, ms=5, lw=1.4)[0])
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, lw=0)
        _log_bytes_axis(ax, zero, top)
        ax.set_xlabel("cumulative uplink bytes (log; 0 B: nothing sent yet)")
        ax.set_ylabel("score")
        ax.set_title(task, fontsize=10)
    _legend(fig, handles)
    fig.suptitle("Score against cumulative uplink (mean over seeds, band: 95% interval)")
    return fig


def score_vs_cumulative_uplink(records: list[dict[str, Any]], path: Path) -> bool:
    """Per task: each method's score against the uplink it has spent so far, at round 0 and
    every evaluated round, a line per method (mean over seeds) with a band (95% t interval).
    False (no figure) when no run was evaluated at more than its last round (``--eval-every``)."""
    return _save_drawn(draw_score_vs_cumulative_uplink(records), path)


def _save_drawn(fig, path: Path) -> bool:
    """Save a figure a ``draw_*`` function returned (it carries its title and layout); False
    when it drew none (nothing to show)."""
    if fig is None:
        return False
    save_figure(fig, None, path, tight=False)
    return True


def score_by_round(records: list[dict[str, Any]], path: Path) -> bool:
    """Per task: mean score over seeds at each evaluated round, a line per method. False (no
    figure) when no run was evaluated at more than one round (``--eval-every``)."""
    return _save_drawn(draw_score_by_round(records), path)


def draw_gains(rows: list[dict[str, Any]]):
    """The figure of ``gains``, or None when no local-only runs pair with the rows."""
    panels = [(t, [r for r in rs if r.get("delta_local_only") is not None]) for t, rs in _panels(rows)]
    panels = [(t, rs) for t, rs in panels if rs]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = _grid(plt, len(panels), 4.6, 3.6)
    handles: dict[str, Any] = {}
    for ax, (title, rs) in zip(axes, panels):
        labels = _labels(rs)
        styles = _styles(rs, labels)
        for r in sorted(rs, key=lambda r: labels[id(r)]):
            st = styles[labels[id(r)]]
            h = ax.errorbar(r["personalization_gain"], r["delta_local_only"], xerr=_err(r, "personalization_gain"),
                            yerr=_err(r, "delta_local_only"), fmt=st["marker"], color=st["color"], mfc=st["mfc"], ms=st["ms"],
                            capsize=3, lw=1)
            handles.setdefault(labels[id(r)], h)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("personalization gain (points)")
        ax.set_ylabel("minus local-only (points)")
        ax.set_title(title, fontsize=10)
    _legend(fig, handles)
    fig.suptitle("Personalization against collaboration (95% intervals over seeds)")
    return fig


def gains(rows: list[dict[str, Any]], path: Path) -> bool:
    """Per task (and channel): personalization gain against collaboration gain (the row minus
    local-only), one point per method with 95% intervals. False when no local-only runs pair
    with the rows."""
    return _save_drawn(draw_gains(rows), path)


def draw_channel_costs(rows: list[dict[str, Any]]):
    """The figure of ``channel_costs``, or None when the records hold a single channel and a
    single scheduler. With several schedulers, a group of bars per channel and scheduler, and
    a fourth panel: Jain's fairness of delivered updates."""
    schedulers = sorted({r.get("scheduler") or "random" for r in rows})
    by_scheduler = len(schedulers) > 1
    where = lambda r: (r["channel"], r.get("scheduler") or "random") if by_scheduler else (r["channel"],)  # noqa: E731
    groups = sorted({where(r) for r in rows})
    if len({g[0] for g in groups}) < 2 and not by_scheduler:
        return None
    import numpy as np

    plt = _pyplot()
    methods = sorted({r["method"] for r in rows})
    panels = [("airtime_s", "airtime per run (s, log)"), ("energy_j", "energy per run (J, log)"),
              ("lost", "lost or late updates per run")] + ([("jain_delivered", "fairness (Jain, delivered updates)")]
                                                            if by_scheduler else [])
    if by_scheduler:  # four panels of many groups: two by two
        fig, grid = plt.subplots(2, 2, figsize=(max(12, 0.75 * len(groups) * 2 + 2), 9), layout="constrained")
        axes = list(grid.flat)
    else:
        fig, axes = plt.subplots(1, len(panels), figsize=(max(15, 1.1 * len(groups) * len(panels) + 2.6), 4.6),
                                 layout="constrained")
    width = 0.8 / len(methods)
    handles: dict[str, Any] = {}
    for ax, (key, label) in zip(axes, panels):
        for i, m in enumerate(methods):
            vals = []
            for g in groups:
                rs = [r for r in rows if r["method"] == m and where(r) == g]
                v = [(r["lost_updates"] + r["late_updates"]) if key == "lost" else r[key] for r in rs]
                v = [x for x in v if x is not None]
                vals.append(sum(v) / len(v) if v else 0.0)
            handles.setdefault(m, ax.bar(np.arange(len(groups)) + i * width, vals, width, color=method_style(m)[0]))
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [" · ".join(g) for g in groups],
                      rotation=90 if by_scheduler else 30, ha="right", va="center" if by_scheduler else "baseline", rotation_mode="anchor", fontsize=8)
        if key in ("airtime_s", "energy_j"):
            ax.set_yscale("log")  # fedavg-full's bars are decades above the adapters'; methods that send nothing have none
        ax.set_ylabel(label)
    _legend(fig, handles)
    fig.suptitle(f"What each channel{' and scheduler' if by_scheduler else ''} costs (means over tasks and seeds; "
                 f"no bar: none, as on the ideal channel or for a method that sends nothing)")
    return fig


def channel_costs(rows: list[dict[str, Any]], path: Path) -> bool:
    """Airtime and energy per run (log axes: they span decades) and lost-or-late updates, by
    channel (and scheduler, with fairness, when several ran), a bar per method in its colour
    (means over tasks and seeds). False when the records hold a single channel and scheduler."""
    return _save_drawn(draw_channel_costs(rows), path)
