"""Leaderboard tables from run records (tabulate), aggregated over seeds.

Runs that differ only in their seed form one row: n, the mean and the 95% t interval over
seeds of each score (``pflbench.results.stats``). One table per task. Settings shared by
every row of a table are said once above it; settings that differ between rows are columns.
Every table starts with its reference rows: ``base`` (the untrained model) and, on label
tasks, ``majority label``. Each row is paired seed by seed with the reference methods
(local-only and fedavg-lora) run with the same settings; a difference whose interval
excludes 0 is marked resolved (``*``).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from tabulate import tabulate

from pflbench import registry
from pflbench.results.stats import Estimate, Paired, estimate, paired, participation_fairness

# spec fields that make a row, besides the method; the seed is what a row aggregates over
SETTINGS = ("model", "channel", "scheduler", "codec", "clients", "clients_per_round", "rounds", "local_steps", "batch_size",
            "lr", "eval_every", "method_options", "device", "precision", "dp", "secagg")
REFERENCE_METHODS = ("local-only", "fedavg-lora")  # every row is paired with these
FAIRNESS = ("jain_scheduled", "jain_delivered")  # derived from the rounds: results.stats.participation_fairness


def human_bytes(n: int | float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


@dataclass
class Row:
    """Runs of one method and one setting over seeds."""

    method: str
    settings: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    def per_seed(self, key: str | Callable[[dict[str, Any]], float | None]) -> dict[int, float]:
        """seed -> a summary field, a metric's sub-score (``summary.diagnostics``), or what a
        function of the record returns (None: that seed has no value)."""
        out = {}
        for r in self.records:
            s = r["summary"]
            if callable(key):
                value = key(r)
            elif key in FAIRNESS:  # derived from the rounds, so records from before it have it too
                value = participation_fairness(r)[key]
            else:
                value = s[key] if key in s else (s.get("diagnostics") or {}).get(key)
            if value is not None:
                out[r["spec"]["seed"]] = value
        return out

    def estimate(self, key: str) -> Estimate:
        return estimate(list(self.per_seed(key).values()))

    @property
    def seeds(self) -> list[int]:
        return sorted(r["spec"]["seed"] for r in self.records)

    def mean(self, key: str) -> float:
        return sum(r["summary"][key] for r in self.records) / len(self.records)


def _settings(spec: dict[str, Any]) -> dict[str, Any]:
    # records from before 'device' ran on cpu, before 'precision' in fp32; a spec leaves the
    # scheduler out at random
    return {k: spec.get(k, {"device": "cpu", "precision": "fp32", "scheduler": "random", "dp": {}, "secagg": False}.get(k)) for k in SETTINGS}


def _key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def _loose(row: "Row", *free: str) -> str:
    """The key of ``row``'s settings with the ``free`` fields left out: rows that differ only
    there are the same setting to a comparison."""
    return _key({k: v for k, v in row.settings.items() if k not in free})


def _varying_settings(rows: list["Row"], *skip: str) -> list[str]:
    """The settings (``SETTINGS`` order, but ``skip``) whose values differ between the rows."""
    return [k for k in SETTINGS if k not in skip and len({_key({"v": r.settings[k]}) for r in rows}) > 1]


def group(records: list[dict[str, Any]]) -> dict[str, list[Row]]:
    """task -> its rows (one per method and setting), in a fixed order however the records
    were found. A spec run twice (same run id) counts once."""
    # one record per (task, method, settings, seed): a re-run under another suite or plugin
    # version (another run id) replaces the earlier one found, rather than counting twice
    # runs of a randomly initialised model time a model's size; their scores mean nothing
    unique = {(r["spec"]["task"], r["spec"]["method"], _key(_settings(r["spec"])), r["spec"]["seed"]): r for r in records
              if r["spec"].get("init", "pretrained") == "pretrained"}
    rows: dict[tuple[str, str, str], Row] = {}
    for r in sorted(unique.values(), key=lambda r: (r["spec"]["seed"], r["run_id"])):
        s = r["spec"]
        settings = _settings(s)
        rows.setdefault((s["task"], s["method"], _key(settings)), Row(s["method"], settings)).records.append(r)
    out: dict[str, list[Row]] = defaultdict(list)
    for (task, _, _), row in sorted(rows.items(), key=lambda kv: kv[0]):
        out[task].append(row)
    return dict(out)


def reference_row(row: Row, rows: list[Row], method: str) -> Row | None:
    """The row of ``method`` run with ``row``'s settings; learning rate and method options
    may differ (they are the method's own), an identical learning rate preferred."""
    mine = _loose(row, "lr", "method_options")
    candidates = [r for r in rows if r.method == method and _loose(r, "lr", "method_options") == mine]
    same_lr = [r for r in candidates if r.settings["lr"] == row.settings["lr"]]
    return (same_lr or candidates or [None])[0]


def compare(row: Row, rows: list[Row], method: str, key: str = "score") -> Paired | None:
    ref = reference_row(row, rows, method)
    if ref is None or ref is row:
        return None
    return paired(row.per_seed(key), ref.per_seed(key))


# ---- formatting ------------------------------------------------------------------------
def fmt_estimate(e: Estimate, signed: bool = False) -> str:
    if e.n == 0:
        return ""
    mean = f"{e.mean:+.2f}" if signed else f"{e.mean:.2f}"
    return mean if e.n < 2 else f"{mean} ± {e.half_width:.2f}"


def fmt_paired(p: Paired | None) -> str:
    if p is None or p.diff.n == 0:
        return ""
    text = fmt_estimate(p.diff, signed=True)
    if p.diff.n >= 2:
        text += f" ({p.up}/{p.diff.n} up)" + (" *" if p.diff.resolved else "")
    return text


def _seed_list(seeds: list[int]) -> str:
    seeds = sorted(set(seeds))
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _setting_text(key: str, value: Any) -> str:
    if key == "method_options":
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if key == "dp":  # --dp's own spelling; "-": none
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items() if v is not None) or "-"
    return str(value)


def _headline(task: str, rows: list[Row], shared: dict[str, Any]) -> str:
    first = rows[0].records[0]
    metric = first["summary"]["metric"]
    parts = [f"{k.replace('_', ' ')} {_setting_text(k, v)}" for k, v in shared.items()
             if (k not in ("method_options", "dp", "secagg") or v) and (k, v) != ("scheduler", "random")]
    seeds = sorted({s for r in rows for s in r.seeds})
    direction = "points, higher is better" if registry.metrics.get(metric).higher_is_better else "lower is better"
    return (f"### {task} (score: {metric}, {direction})\n\n"
            f"Shared by every row: {', '.join(parts)}; seeds {_seed_list(seeds)}.{_measured_on(rows)}")


def _measured_on(rows: list[Row]) -> str:
    """Where the rows' runs were measured (the records' ``measured_on``), said once when they
    share a machine, and as a warning when they mix machines or builds of a model or reward
    model: their scores then differ by the machines' float sums, not only by method and seed."""
    records = [r for row in rows for r in row.records]
    known = [(r, r["measured_on"]) for r in records if isinstance(r.get("measured_on"), dict)]
    if not known:
        return ""
    machines = Counter(f"{m.get('machine')}, torch {m.get('torch')}" for _, m in known)
    builds: dict[str, set] = defaultdict(set)
    for r, m in known:
        weights = m.get("weights") or {}
        builds[r["spec"].get("model", "?")].add(weights.get("model"))
        for role, fp in (weights.get("rewards") or {}).items():
            builds[f"the {role} reward model"].add(fp)
    mixed = {name: fps for name, fps in builds.items() if len(fps) > 1}
    if len(machines) == 1 and not mixed and len(known) == len(records):
        return f" Measured on {next(iter(machines))}."
    parts = [f"{name}: {k} run{'s' if k > 1 else ''}" for name, k in machines.most_common()]
    if len(known) < len(records):
        parts.append(f"machine not recorded: {len(records) - len(known)} run{'s' if len(records) - len(known) > 1 else ''}")
    text = (f" **The rows' runs come from more than one machine** ({'; '.join(parts)})" if len(parts) > 1
            else f" Measured on {next(iter(machines))}")
    if mixed:
        text += "; **rows mix builds of " + ", ".join(f"{name} ({len(fps)})" for name, fps in sorted(mixed.items())) + "**"
    return text + (": float sums follow each machine's kernels, and the models built on it (tiny, tiny-chat, the reward "
                   "models) with them, so compare rows measured on one machine." if len(parts) > 1 or mixed else ".")


LEGEND = (
    "Cells: mean ± half-width of the 95% t interval over the row's n seeds. "
    "Δ columns: the row minus a reference, paired seed by seed: Δ base, minus the untrained model "
    "(did training move anything?); Δ local-only (the collaboration gain) and Δ fedavg-lora, minus "
    "that method run with the same settings; (k/n up): seeds where the row scores higher; "
    "* resolved: the interval of the paired difference excludes 0. "
    "base: the untrained model; majority label: each client always answers its training split's most common label."
)


# --membership's summary fields: the attack on the deployed model, the shared part, one upload, the untrained model
MIA_FIELDS = ("membership_auc", "membership_auc_shared", "membership_auc_upload", "base_membership_auc")
MIA_LEGEND = (
    " member AUC: a loss-threshold membership-inference attack on each client's own training examples against "
    "its held-out ones (0.5: nothing told apart), on the deployed model, the shared part alone, the model the server "
    "rebuilds from one client's upload (upload: the last evaluated round's senders; blank where no one holds a "
    "single upload, under secure aggregation or over the air) and the untrained model (base: what the splits differ "
    "by before any training)."
)


def task_table(task: str, rows: list[Row], fmt: str = "github") -> str:
    varying = _varying_settings(rows)
    shared = {k: rows[0].settings[k] for k in SETTINGS if k not in varying}
    diagnostics = sorted({k for r in rows for rec in r.records for k in (rec["summary"].get("diagnostics") or {})})
    has_unseen = any(rec["summary"].get("unseen_client_score") is not None for r in rows for rec in r.records)
    has_dp = any(rec["summary"].get("epsilon") is not None for r in rows for rec in r.records)
    has_mia = any(rec["summary"].get("membership_auc") is not None for r in rows for rec in r.records)
    header = ["method", *varying, "n", "score", "Δ base", "pers. gain",
              "Δ local-only", "Δ fedavg-lora", "worst client", *diagnostics,
              *(["unseen clients"] if has_unseen else []), *(["ε"] if has_dp else []),
              *(["member AUC", "member AUC shared", "member AUC upload", "member AUC base"] if has_mia else []), "uplink", "downlink", "up+down",
              "airtime s", "delivered/lost/late"]
    header = [h.replace("_", " ") for h in header]
    body = []
    # reference rows: the untrained model (and the majority label) per distinct model and client count
    for label, key in (("base", "base_score"), ("majority label", "majority_label_score")):
        seen: dict[str, Row] = {}
        for r in rows:
            ref_settings = {k: (r.settings[k] if k in ("model", "clients") else None) for k in SETTINGS}
            ref = seen.setdefault(_key(ref_settings), Row(label, ref_settings))
            known = {rec["spec"]["seed"] for rec in ref.records}
            ref.records.extend(rec for rec in r.records if rec["spec"]["seed"] not in known and rec["summary"].get(key) is not None)
        for ref in seen.values():
            if ref.records:
                e = ref.estimate(key)
                body.append([label, *[_setting_text(k, ref.settings[k]) if ref.settings[k] is not None else "" for k in varying],
                             e.n, fmt_estimate(e), *[""] * (len(header) - 3 - len(varying))])
    for r in rows:
        delivered = f"{r.mean('delivered_updates'):.0f}/{r.mean('lost_updates'):.0f}/{r.mean('late_updates'):.0f}"
        unseen = [fmt_estimate(r.estimate("unseen_client_score"))] if has_unseen else []
        body.append([
            r.method, *[_setting_text(k, r.settings[k]) for k in varying], len(r.records),
            fmt_estimate(r.estimate("score")), fmt_paired(paired(r.per_seed("score"), r.per_seed("base_score"))),
            fmt_estimate(r.estimate("personalization_gain"), signed=True),
            fmt_paired(compare(r, rows, "local-only")), fmt_paired(compare(r, rows, "fedavg-lora")),
            fmt_estimate(r.estimate("worst_client_score")),
            *[fmt_estimate(r.estimate(d)) for d in diagnostics], *unseen, *([_epsilon_cell(r)] if has_dp else []),
            *([fmt_estimate(r.estimate(k)) for k in MIA_FIELDS]
              if has_mia else []),
            *_bytes_cells(r), f"{r.mean('airtime_s'):.2f}", delivered,
        ])
    table = tabulate(body, headers=header, tablefmt=fmt, disable_numparse=True)
    parts = [_headline(task, rows, shared), table]
    if diagnostics:
        parts.append(_diagnostic_differences(rows, varying, diagnostics, fmt))
    legend = LEGEND + (MIA_LEGEND if has_mia else "")
    return "\n\n".join([*parts, legend])


def _epsilon_cell(r: Row) -> str:
    """The run's privacy budget (the same for every seed of a row): ε at its δ; blank without --dp."""
    spent = {(rec["summary"].get("epsilon"), rec["summary"].get("dp_delta")) for rec in r.records}
    if spent == {(None, None)}:
        return ""
    return " / ".join(f"{e:.2f} (δ {d:g})" for e, d in sorted(spent, key=str))


def _bytes_cells(r: Row) -> list[str]:
    """Mean bytes per run: uplink, downlink (what the server broadcast) and their sum."""
    up, down = r.mean("uplink_bytes"), r.mean("downlink_bytes")
    return [human_bytes(up), human_bytes(down), human_bytes(up + down)]


def _diagnostic_differences(rows: list[Row], varying: list[str], diagnostics: list[str], fmt: str) -> str:
    """The metric's sub-scores, paired seed by seed against each reference method."""
    body = []
    for r in rows:
        for method in REFERENCE_METHODS:
            if reference_row(r, rows, method) not in (None, r):
                body.append([r.method, *[_setting_text(k, r.settings[k]) for k in varying], method,
                             *[fmt_paired(compare(r, rows, method, d)) for d in diagnostics]])
    header = ["method", *[k.replace("_", " ") for k in varying], "minus", *[f"Δ {d.replace('_', ' ')}" for d in diagnostics]]
    return "Sub-scores, paired differences:\n\n" + tabulate(body, headers=header, tablefmt=fmt, disable_numparse=True)


def render(records: list[dict[str, Any]], fmt: str = "github") -> str:
    """Every task's table, tasks in name order."""
    return "\n\n".join(task_table(task, rows, fmt) for task, rows in group(records).items())


# ---- machine-readable rows (CSV, JSON) ------------------------------------------------------
def _est(prefix: str, e: Estimate) -> dict[str, Any]:
    ok = e.n >= 2
    return {f"{prefix}": e.mean if e.n else None, f"{prefix}_low": e.low if ok else None, f"{prefix}_high": e.high if ok else None}


def _diff(prefix: str, p: Paired | None) -> dict[str, Any]:
    if p is None or p.diff.n == 0:
        return {prefix: None, f"{prefix}_low": None, f"{prefix}_high": None, f"{prefix}_up": None, f"{prefix}_resolved": None}
    return {**_est(prefix, p.diff), f"{prefix}_up": p.up, f"{prefix}_resolved": bool(p.diff.n >= 2 and p.diff.resolved)}


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per task, method and setting: the numbers behind the tables (means, 95% t
    interval bounds over seeds, paired differences with their seed counts), for CSV and JSON."""
    out = []
    for task, rows in group(records).items():
        for r in rows:
            row: dict[str, Any] = {"task": task, "method": r.method, "metric": r.records[0]["summary"]["metric"],
                                   **{k: (json.dumps(v, sort_keys=True) if k == "method_options" else v) for k, v in r.settings.items()},
                                   "n": len(r.records), "seeds": " ".join(map(str, r.seeds))}
            row.update(_est("score", r.estimate("score")))
            row.update(_diff("delta_base", paired(r.per_seed("score"), r.per_seed("base_score"))))
            row.update(_est("personalization_gain", r.estimate("personalization_gain")))
            for ref in REFERENCE_METHODS:
                row.update(_diff(f"delta_{ref.replace('-', '_')}", compare(r, rows, ref)))
            row.update(_est("worst_client_score", r.estimate("worst_client_score")))
            row.update(_est("shared_score", r.estimate("shared_score")))
            for key in FAIRNESS:
                row.update(_est(key, r.estimate(key)))
            for key in ("uplink_bytes", "downlink_bytes", "airtime_s", "energy_j", "delivered_updates", "lost_updates", "late_updates"):
                row[key] = r.mean(key)
            row["total_bytes"] = row["uplink_bytes"] + row["downlink_bytes"]
            row["epsilon"] = max((rec["summary"].get("epsilon") for rec in r.records
                                  if rec["summary"].get("epsilon") is not None), default=None)
            row["dp"] = json.dumps(r.settings["dp"], sort_keys=True) if r.settings["dp"] else None
            for key in MIA_FIELDS:
                row.update(_est(key, r.estimate(key)))
            out.append(row)
    return out


def render_csv(records: list[dict[str, Any]]) -> str:
    import csv
    import io

    rows = summary_rows(records)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def channel_table(records: list[dict[str, Any]], fmt: str = "github") -> str | None:
    """Per task, every method under every channel: the score, what the channel costs against
    the same method's run on the ideal channel (paired seed by seed), lost and late updates,
    airtime and energy per run (means over seeds). None when the records hold one channel."""
    grouped = group(records)
    if len({r.settings["channel"] for rows in grouped.values() for r in rows}) < 2:
        return None
    parts = []
    for task, rows in grouped.items():
        ideal = {(r.method, _loose(r, "channel")): r for r in rows if r.settings["channel"] == "ideal"}
        body = []
        for r in sorted(rows, key=lambda r: (r.method, r.settings["channel"] != "ideal", str(r.settings["channel"]))):
            ref = ideal.get((r.method, _loose(r, "channel")))
            cost = "" if ref is None or ref is r else fmt_paired(paired(r.per_seed("score"), ref.per_seed("score")))
            body.append([r.method, r.settings["channel"], len(r.records), fmt_estimate(r.estimate("score")), cost,
                         f"{r.mean('lost_updates'):.1f}", f"{r.mean('late_updates'):.1f}", f"{r.mean('airtime_s'):.2f}",
                         f"{r.mean('energy_j'):.3g}", *_bytes_cells(r)])
        header = ["method", "channel", "n", "score", "Δ ideal", "lost", "late", "airtime s", "energy J", "uplink", "downlink", "up+down"]
        parts.append(f"### {task}: what each channel costs\n\n" + tabulate(body, headers=header, tablefmt=fmt, disable_numparse=True))
    return "\n\n".join(parts) + ("\n\nΔ ideal: the score minus the same method's on the ideal channel, paired seed by seed "
                                 "(* resolved); lost, late: updates per run; airtime and energy: summed over a run's uploads.")


def scheduler_table(records: list[dict[str, Any]], fmt: str = "github") -> str | None:
    """Per task and channel, every method under every scheduler, each paired seed by seed
    against the same method's run under ``random``: score, the worst client's score, Jain's
    fairness of delivered updates, airtime and energy per run, lost and late updates. None
    when the records hold one scheduler."""
    grouped = group(records)
    if len({r.settings["scheduler"] for rows in grouped.values() for r in rows}) < 2:
        return None
    parts = []
    for task, rows in grouped.items():
        base = {(r.method, _loose(r, "scheduler", "lr")): r for r in rows if r.settings["scheduler"] == "random"}
        body = []
        for r in sorted(rows, key=lambda r: (str(r.settings["channel"]), r.method, r.settings["scheduler"] != "random",
                                             str(r.settings["scheduler"]))):
            ref = base.get((r.method, _loose(r, "scheduler", "lr")))
            vs = (lambda key: "" if ref is None or ref is r else fmt_paired(paired(r.per_seed(key), ref.per_seed(key))))  # noqa: E731
            body.append([r.settings["channel"], r.method, r.settings["scheduler"], len(r.records),
                         fmt_estimate(r.estimate("score")), vs("score"), fmt_estimate(r.estimate("worst_client_score")),
                         fmt_estimate(r.estimate("jain_delivered")), vs("jain_delivered"),
                         f"{r.mean('airtime_s'):.3g}", vs("airtime_s"), f"{r.mean('energy_j'):.3g}", vs("energy_j"),
                         f"{r.mean('lost_updates'):.1f}", f"{r.mean('late_updates'):.1f}"])
        header = ["channel", "method", "scheduler", "n", "score", "Δ random", "worst client", "fairness", "Δ fairness",
                  "airtime s", "Δ airtime", "energy J", "Δ energy", "lost", "late"]
        parts.append(f"### {task}: what each scheduler buys and costs\n\n"
                     + tabulate(body, headers=header, tablefmt=fmt, disable_numparse=True))
    return "\n\n".join(parts) + (
        "\n\nΔ columns: the row minus the same method's run under the random scheduler on the same channel, paired "
        "seed by seed (k/n up, * resolved); fairness: Jain's index (sum x)^2 / (n sum x^2) over all clients of the "
        "updates each delivered (1: equal, 1/n: one client had them all); airtime and energy summed over a run's uploads; "
        "lost, late: updates per run.")


# ---- the same comparison on several models ---------------------------------------------
# the paper's claims: each method of the paper against each reference
PAPER_COMPARISONS = (("pftt", "local-only"), ("pftt", "fedavg-lora"), ("pfit", "local-only"), ("pfit", "fedavg-lora"))


def _verdict(p: Paired) -> str:
    if p.diff.n < 2:
        return "one seed"
    if not p.diff.resolved:
        return "unresolved"
    return "above" if p.diff.mean > 0 else "below"


def across_models(records: list[dict[str, Any]], fmt: str = "github",
                  comparisons: tuple[tuple[str, str], ...] | None = None, by: str = "model") -> str:
    """Per task, each comparison (a method minus a reference, paired seed by seed within one
    model) on every model that ran both, side by side, and whether its verdict (resolved
    above, resolved below, unresolved) is the same on every model: which claims survive a
    change of model and which flip. Default comparisons: the paper's methods against the
    references, then every other method against them. ``by``: another setting to set side by
    side instead of the model (``precision``)."""
    out = []
    for task, all_rows in group(records).items():
        # the other settings that vary (but a method's own learning rate and options): one table
        # for each of their combinations, so that a column never pairs rows of two settings
        others = _varying_settings(all_rows, by, "lr", "method_options")
        contexts: dict[str, list[Row]] = {}
        for r in all_rows:
            contexts.setdefault(_key({k: r.settings[k] for k in others}), []).append(r)
        for context, rows in sorted(contexts.items()):
            title = task + "".join(f", {k.replace('_', ' ')} {_setting_text(k, v)}" for k, v in json.loads(context).items())
            out.append(_across_table(title, rows, fmt, comparisons, by))
    return "\n\n".join(out) + ("\n\nCells: the paired difference in score points, mean ± half-width of the 95% t "
                               "interval over the seeds both methods ran on that column's setting, (k/n up), * resolved; "
                               "[above/below]: resolved, [unresolved]: the interval holds 0. across: "
                               "same (one resolved verdict on every model), FLIPS (resolved in opposite "
                               "directions), differs (resolved on one, not on another).")


def _across_table(title: str, rows: list[Row], fmt: str, comparisons: tuple[tuple[str, str], ...] | None, by: str) -> str:
    """One task-and-setting's table of ``across_models``."""
    models = sorted({str(r.settings[by]) for r in rows})
    methods = sorted({r.method for r in rows})
    pairs = list(comparisons or [c for c in PAPER_COMPARISONS if c[0] in methods])
    if comparisons is None:
        for m in methods:
            for ref in REFERENCE_METHODS:
                if m not in ("pftt", "pfit") and m != ref and ref in methods and (ref, m) not in pairs:
                    pairs.append((m, ref))
    body = []
    for method, ref in pairs:
        cells, verdicts = [], []
        for model in models:
            row = next((r for r in rows if r.method == method and str(r.settings[by]) == model), None)
            p = compare(row, rows, ref) if row is not None else None
            cells.append(f"{fmt_paired(p)} [{_verdict(p)}]" if p is not None and p.diff.n else "")
            if p is not None and p.diff.n >= 2:
                verdicts.append(_verdict(p))
        if len(verdicts) < 2:
            agree = "-"
        elif len(set(verdicts)) == 1:
            agree = "same" if verdicts[0] != "unresolved" else "unresolved on all"
        elif {"above", "below"} <= set(verdicts):
            agree = "FLIPS"
        else:
            agree = "differs"
        body.append([f"{method} - {ref}", *cells, agree])
    table = tabulate(body, headers=["comparison", *models, f"across {by}s"], tablefmt=fmt, disable_numparse=True)
    return f"### {title}: each comparison on each {by}\n\n{table}"


# ---- methods paired at equal privacy ----------------------------------------------------
def _privacy_level(r: Row) -> tuple[float, float] | str | None:
    """A row's privacy budget, what ``epsilon_table`` pairs on: (ε to 4 significant digits,
    δ) of a DP run; "free" for a run that uploaded nothing (it spends no ε, so it stands beside
    every level); None for a run without DP that uploads."""
    if all(rec["summary"]["uplink_bytes"] == 0 for rec in r.records):
        return "free"
    spent = {(rec["summary"].get("epsilon"), rec["summary"].get("dp_delta")) for rec in r.records}
    if len(spent) != 1 or None in next(iter(spent)):
        return None
    eps, delta = next(iter(spent))
    return float(f"{eps:.4g}"), delta


def epsilon_table(records: list[dict[str, Any]], fmt: str = "github") -> str | None:
    """Per task, each DP row paired seed by seed with every reference method's row at the
    same (ε, δ) whatever its DP setting (local or central, another clip or noise giving the
    same ε), the other settings equal: score and membership AUC. A method that uploads
    nothing (local-only) spends no ε and stands beside every level (its run with the same DP
    setting preferred, else one without). None when no run used --dp."""
    out = []
    for task, rows in group(records).items():
        levels = {id(r): _privacy_level(r) for r in rows}
        if not any(isinstance(v, tuple) for v in levels.values()):
            continue
        own = ("dp", "lr", "method_options")  # settings a method may change to reach a level
        varying = _varying_settings(rows, *own)
        body = []
        for r in sorted(rows, key=lambda r: (str(levels[id(r)]), r.method, _setting_text("dp", r.settings["dp"]))):
            level = levels[id(r)]
            if not isinstance(level, tuple):
                continue
            for method in REFERENCE_METHODS:
                if method == r.method:
                    continue
                refs = [x for x in rows if x.method == method and _loose(x, *own) == _loose(r, *own) and levels[id(x)] in (level, "free")]
                free = [x for x in refs if levels[id(x)] == "free"]
                if free:  # one stands for all: the same setting's run, else the plain one
                    refs = [next((x for x in free if x.settings["dp"] == r.settings["dp"]),
                                 next((x for x in free if not x.settings["dp"]), free[0]))]
                for ref in refs:
                    vs = lambda key: fmt_paired(paired(r.per_seed(key), ref.per_seed(key)))  # noqa: E731
                    body.append([f"{level[0]:g} (δ {level[1]:g})", r.method, _setting_text("dp", r.settings["dp"]),
                                 *[_setting_text(k, r.settings[k]) for k in varying], method,
                                 _setting_text("dp", ref.settings["dp"]) if levels[id(ref)] == level else "(uploads nothing)",
                                 len(paired(r.per_seed("score"), ref.per_seed("score")).seeds), vs("score"),
                                 vs("membership_auc"), vs("membership_auc_upload"), human_bytes(r.mean("uplink_bytes"))])
        if body:
            header = ["ε (δ)", "method", "dp", *[k.replace("_", " ") for k in varying], "minus", "its dp", "n",
                      "Δ score", "Δ member AUC", "Δ member AUC upload", "uplink"]
            out.append(f"### {task}: methods paired at equal privacy\n\n"
                       + tabulate(body, headers=header, tablefmt=fmt, disable_numparse=True))
    if not out:
        return None
    return "\n\n".join(out) + (
        "\n\nEach row: a DP run minus a reference method's run at the same (ε, δ), whatever DP setting reached it, "
        "the other settings equal, paired seed by seed (n seeds, k/n up, * resolved: the 95% t interval excludes 0). "
        "A method that uploads nothing spends no ε and is the reference at every level. Δ member AUC: the "
        "membership-inference attack on the deployed model, and on the model the server rebuilds from one upload "
        "(blank without --membership, or where the reference uploads nothing); uplink: the row's, per run.")
