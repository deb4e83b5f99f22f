"""Does a client's helpfulness weight show in what it refuses? For every method's synth-align runs
in a results folder: the share of conflicting requests refused by clients whose weight on
helpfulness is above one half and by those below, at the last evaluation, and the gap (below
minus above) paired over seeds with its 95% t interval (pflbench.results.stats, formatted as the
tables do: * resolved); then the gap of PFIT and PFTT against the
references'. Used for docs/methods/pfit.md and docs/leaderboards.md:

    python leaderboard/probes/refusal_split.py results/board
"""
import json
import sys
from pathlib import Path

from pflbench.results.stats import estimate, paired
from pflbench.results.table import fmt_estimate, fmt_paired

# method -> seed -> refusal rate (%) of the clients above and below a helpfulness weight of 1/2
above: dict[str, dict[int, float]] = {}
below: dict[str, dict[int, float]] = {}
counts: dict[str, list[int]] = {}
for path in sorted(Path(sys.argv[1]).glob("*/record.json")):
    record = json.loads(path.read_text())
    if record["spec"]["task"] != "synth-align":
        continue
    high, low = [], []
    for client, weights in zip(record["rounds"][-1]["eval"]["clients"], record["task"]["weights"]):
        (high if weights["helpful"] > 0.5 else low).append(client["diagnostics"]["refusal_conflict"])
    method, seed = record["spec"]["method"], record["spec"]["seed"]
    above.setdefault(method, {})[seed] = sum(high) / len(high) if high else float("nan")
    below.setdefault(method, {})[seed] = sum(low) / len(low) if low else float("nan")
    n = counts.setdefault(method, [0, 0])
    n[0], n[1] = n[0] + len(high), n[1] + len(low)

gap = {m: {s: below[m][s] - above[m][s] for s in above[m]} for m in above}
for method in sorted(above):
    print(f"{method:14s} seeds {sorted(above[method])}  refused: weight > 1/2 "
          f"{fmt_estimate(estimate(list(above[method].values())))}% ({counts[method][0]} client-runs), < 1/2 "
          f"{fmt_estimate(estimate(list(below[method].values())))}% ({counts[method][1]})  "
          f"gap {fmt_paired(paired(below[method], above[method]))}")
print("gap minus gap, paired over seeds:")
for a, b in [("pfit", "local-only"), ("pfit", "fedavg-lora"), ("pfit", "pftt"), ("pftt", "local-only")]:
    if a in gap and b in gap:
        print(f"  {a} - {b}: {fmt_paired(paired(gap[a], gap[b]))}")
