"""Does a client's helpfulness weight show in what it refuses? For every method's synth-align runs
in a results folder: the share of conflicting requests refused by clients whose weight on
helpfulness is above one half and by those below, at the last evaluation, and the gap (below
minus above) paired over seeds with its 95% t interval; then the gap of PFIT and PFTT against the
references'. Used for docs/methods/pfit.md and docs/leaderboards.md:

    python leaderboard/probes/refusal_split.py results/board
"""
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def interval(d: np.ndarray) -> str:
    hw = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{d.mean():+.1f} ± {hw:.1f} ({int((d > 0).sum())}/{len(d)} up)"


gaps: dict[str, dict[int, float]] = {}
for path in sorted(Path(sys.argv[1]).glob("*/record.json")):
    record = json.loads(path.read_text())
    if record["spec"]["task"] != "synth-align":
        continue
    high, low = [], []
    for client, weights in zip(record["rounds"][-1]["eval"]["clients"], record["task"]["weights"]):
        (high if weights["helpful"] > 0.5 else low).append(client["diagnostics"]["refusal_conflict"])
    method, seed = record["spec"]["method"], record["spec"]["seed"]
    gaps.setdefault(method, {})[seed] = (float(np.mean(high)), float(np.mean(low)), len(high), len(low))

for method, by_seed in sorted(gaps.items()):
    v = [by_seed[s] for s in sorted(by_seed)]
    print(f"{method:14s} seeds {sorted(by_seed)}  refused: weight > 1/2 {np.mean([x[0] for x in v]):5.1f}% "
          f"({sum(x[2] for x in v)} client-runs), < 1/2 {np.mean([x[1] for x in v]):5.1f}% ({sum(x[3] for x in v)})  "
          f"gap {interval(np.array([x[1] - x[0] for x in v]))}")
print("gap minus gap, paired over seeds:")
for a, b in [("pfit", "local-only"), ("pfit", "fedavg-lora"), ("pfit", "pftt"), ("pftt", "local-only")]:
    if a in gaps and b in gaps:
        seeds = sorted(set(gaps[a]) & set(gaps[b]))
        d = np.array([(gaps[a][s][1] - gaps[a][s][0]) - (gaps[b][s][1] - gaps[b][s][0]) for s in seeds])
        print(f"  {a} - {b}: {interval(d)}")
