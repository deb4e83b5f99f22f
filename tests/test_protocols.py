"""Quality under a budget and cost to a target (pflbench.results.protocols, `table --budget/--target`)."""

from __future__ import annotations

import pytest

from pflbench.errors import UserError
from pflbench.federation.engine import run
from pflbench.results.protocols import best_within, budget_table, cost_to, curve, parse_budget, parse_target, target_table
from pflbench.results.table import human_bytes


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """fedavg-lora, local-only and pftt on synth-world, 2 seeds, scored after every round."""
    from pflbench.config import RunSpec

    out = tmp_path_factory.mktemp("protocols")
    records = [run(RunSpec(method=m, task="synth-world", clients=4, clients_per_round=2, rounds=3, local_steps=3,
                           batch_size=4, seed=s, eval_every=1, lr=0.01), out)
               for m in ("fedavg-lora", "local-only", "pftt") for s in (0, 1)]
    return out, records


def test_the_curve_is_every_evaluated_round_with_its_cumulative_cost(evaluated):
    _, records = evaluated
    rec = records[0]
    points = curve(rec)
    assert [p["round"] for p in points] == [0, 1, 2, 3]
    assert points[0]["score"] == rec["summary"]["base_score"] and points[0]["uplink_bytes"] == 0
    running = 0
    for p, r in zip(points[1:], rec["rounds"]):
        running += r["uplink_bytes"]
        assert p["uplink_bytes"] == running and p["score"] == r["eval"]["score"]
    assert points[-1]["airtime_s"] == pytest.approx(rec["summary"]["airtime_s"])
    assert points[-1]["downlink_bytes"] == rec["summary"]["downlink_bytes"] > 0
    assert all(p["total_bytes"] == p["uplink_bytes"] + p["downlink_bytes"] for p in points)
    walls = [p["wall_s"] for p in points]
    assert walls[0] == 0 and all(a < b for a, b in zip(walls, walls[1:]))  # every round took time
    assert walls[-1] <= rec["summary"]["wall_s"]


def test_best_within_a_budget_counts_only_what_fits(evaluated):
    _, records = evaluated
    fed, local = records[0], records[2]
    points = curve(fed)
    two_rounds = points[2]["uplink_bytes"]
    assert best_within(fed, "uplink", two_rounds) == max(p["score"] for p in points[:3])
    assert best_within(fed, "uplink", two_rounds - 1) == max(p["score"] for p in points[:2])
    assert best_within(fed, "uplink", 0) == fed["summary"]["base_score"]  # nothing sent: the untrained model
    assert best_within(local, "uplink", 0) == max(p["score"] for p in curve(local))  # local-only sends nothing
    assert best_within(fed, "rounds", 1) == max(p["score"] for p in points[:2])


def test_cost_to_a_target_is_the_first_round_that_reaches_it(evaluated):
    _, records = evaluated
    rec = records[4]  # pftt, seed 0
    points = curve(rec)
    goal = max(p["score"] for p in points)
    first = next(p for p in points if p["score"] >= goal)
    assert cost_to(rec, goal) == first
    assert cost_to(rec, rec["summary"]["base_score"])["round"] == 0
    assert cost_to(rec, 101.0) is None


def test_the_tables_pair_with_the_references_and_count_runs_that_never_reach(evaluated):
    _, records = evaluated
    text = budget_table(records, "uplink=100kB")
    assert "quality under a budget of uplink 100.00 kB" in text
    pftt = next(l for l in text.splitlines() if l.startswith("| pftt"))
    assert pftt.count("up)") == 2  # paired with local-only and with fedavg-lora, 2 seeds each
    fed = curve(records[0])
    both = budget_table(records, f"total={fed[1]['total_bytes']}B")  # fedavg-lora's first round, both ways
    assert "best within total" in both
    never = target_table(records, "101")
    assert all("0/2" in l and "not reached" in l for l in never.splitlines() if l.startswith("| ") and "method" not in l)
    best = target_table(records, "100%")
    assert "100% of the best method's mean final score" in best
    assert any("/2" in l and not l.split("|")[2].strip().startswith("0/") for l in best.splitlines() if l.startswith("| "))


def test_the_cli_prints_both_protocols_and_bad_input_is_one_line(evaluated, cli):
    out, _ = evaluated
    code, stdout, _ = cli("table", str(out), "--budget", "airtime=10s")
    assert code == 0 and "best within airtime 10 s" in stdout
    code, stdout, _ = cli("table", str(out), "--target", "90%")
    assert code == 0 and "cost to reach a score of 90%" in stdout
    for flag, value, message in (("--budget", "speed=3", "KIND=VALUE"), ("--budget", "uplink=5 parsecs", "unit"),
                                 ("--target", "lots", "a score"), ("--target", "150%", "percentage")):
        code, _, err = cli("table", str(out), flag, value)
        assert code == 2 and err.count("\n") == 1 and message in err


def test_budget_and_target_parse_units():
    assert parse_budget("uplink=5MB") == ("uplink", 5e6)
    assert parse_budget("downlink=2 MiB") == ("downlink", 2 * 2**20)
    assert parse_budget("airtime=2min") == ("airtime", 120.0)
    assert parse_budget("energy=3") == ("energy", 3.0)
    assert parse_budget("rounds=4") == ("rounds", 4.0)
    assert parse_budget("total=1.5kB") == ("total", 1500.0)
    assert parse_target("90%") == (90.0, True) and parse_target("60") == (60.0, False)
    with pytest.raises(UserError):
        parse_budget("rounds=4MB")


def test_the_report_draws_the_cumulative_uplink_curves_and_prints_both_protocols(evaluated, tmp_path):
    """One line per method through round 0 (nothing sent, the untrained model) and every
    evaluated round: x the mean cumulative uplink over seeds, y the mean score with its
    interval; local-only stays at 0 B. The report's tables: quality within what the cheapest
    sending method spends on a whole run, and cost to 90% of the best."""
    from pflbench.results import plots
    from pflbench.results.report import build

    _, records = evaluated
    lines = dict(plots.uplink_curves(records)["synth-world"])
    fed = [r for r in records if r["spec"]["method"] == "fedavg-lora"]
    assert [x for x, _ in lines["fedavg-lora"]] == [p["uplink_bytes"] for p in curve(fed[0])]  # the same bytes every seed
    assert [e.mean for _, e in lines["fedavg-lora"]] == pytest.approx(
        [sum(p["score"] for p in pts) / 2 for pts in zip(curve(fed[0]), curve(fed[1]))])
    assert all(e.n == 2 and e.low <= e.mean <= e.high for _, e in lines["fedavg-lora"])
    assert {x for x, _ in lines["local-only"]} == {0.0}
    written = {p.name for p in build(records, tmp_path)}
    assert "score-vs-cumulative-uplink.png" in written
    md = (tmp_path / "report.md").read_text()
    cheapest = min(r["summary"]["uplink_bytes"] for r in records if r["summary"]["uplink_bytes"] > 0)
    assert f"quality under a budget of uplink {human_bytes(cheapest)}" in md and "cost to reach a score of 90%" in md
    assert "quality under a budget" in (tmp_path / "report.html").read_text()
    assert plots.uplink_curves([{**r, "rounds": r["rounds"][-1:]} for r in records]) == {}  # final round only: no curve


def test_an_interrupted_run_resumes_to_the_same_curve(evaluated, tmp_path):
    """Stopped after round 2 of an evaluated-every-round run, then run again: every point of the
    curve (score, cumulative uplink, downlink, airtime, energy) is the uninterrupted run's;
    wall time is kept for the rounds run before the stop and still grows round by round."""
    from pflbench.config import RunSpec

    _, records = evaluated
    spec = RunSpec.from_dict(records[0]["spec"])

    def stop(rec):
        if rec["round"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path, on_round=stop)
    resumed = curve(run(spec, tmp_path))
    without_wall = lambda points: [{k: v for k, v in p.items() if k != "wall_s"} for p in points]  # noqa: E731
    assert without_wall(resumed) == without_wall(curve(records[0])) and len(resumed) == 4
    assert all(a["wall_s"] < b["wall_s"] for a, b in zip(resumed, resumed[1:]))
