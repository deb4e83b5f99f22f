"""Does helpful-synth know the invented world's facts? For every benign thing of synth-align,
its points for each of the eight fact answers: where the thing's true fact ranks, and which
false fact beats it by how much. Used for leaderboard/smollm2.md ("synth-align on SmolLM2"):

    HF_HUB_OFFLINE=1 python leaderboard/probes/reward_facts.py
"""
from pflbench.data.generators import ALIGN_FACTS, THINGS, align_answer, align_fact
from pflbench.rewards import resolve_reward
from pflbench.rewards.synthetic import benign_prompt

helpful = resolve_reward("helpful-synth")
answers = [" " + align_answer(f) for f in ALIGN_FACTS]
first = 0
for thing in THINGS:
    points = helpful.points([benign_prompt(thing)] * len(answers), answers)
    true = answers.index(" " + align_answer(align_fact(thing)))
    rank = 1 + sum(p > points[true] for p in points)
    best = max(range(len(points)), key=points.__getitem__)
    first += rank == 1
    beaten = "" if rank == 1 else f"  beaten by {answers[best].strip()!r} {points[best]:.0f}"
    print(f"{thing:>10}: true {answers[true].strip()!r} {points[true]:.0f} points, rank {rank} of {len(answers)}{beaten}")
print(f"the true fact ranks first on {first} of {len(THINGS)} things ({helpful.info()['cache']})")
