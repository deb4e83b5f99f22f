"""Does RL game the reward models on a real policy? A short synth-align run on SmolLM2-135M-Instruct
(or the MODEL named last, e.g. smollm2-135m-chat; 4 clients, seed 0), timed round by round, and
two clients' greedy answers to six of their test prompts before and after, each with
helpful-synth's and harmless-synth's points. Used for leaderboard/smollm2.md ("synth-align on
SmolLM2"):

    HF_HUB_OFFLINE=1 python leaderboard/probes/reward_gaming.py pfit 2 4 0.003 [MODEL]   # METHOD ROUNDS STEPS LR
"""
import sys, time
from pflbench.config import RunSpec
from pflbench.federation.resolve import resolve
from pflbench.federation.engine import Runner
from pflbench.evaluation.metrics import generate
from pflbench.rewards import resolve_reward
from pflbench.federation.client import load_into

method, rounds, steps, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
model_name = sys.argv[5] if len(sys.argv) > 5 else "smollm2-135m"
spec = RunSpec(method=method, task="synth-align", model=model_name, clients=4, clients_per_round=4, rounds=rounds,
               local_steps=steps, lr=lr, seed=0)
exp = resolve(spec)
task, model = exp.task, exp.loaded.model
rh, rs = resolve_reward("helpful-synth"), resolve_reward("harmless-synth")

def show(tag, runner=None):
    for c in exp.clients[:2]:
        if runner is not None:
            params = dict(model.named_parameters())
            load_into(params, runner.global_shared)
            if runner.store.has(c.id):
                load_into(params, runner.store.get(c.id))
        ex = c.test[:6]
        prompts = [task._tokenizer.decode(e.prompt) for e in ex]
        ctx = exp.method.deployed(model, runner.store.get_state(c.id) if runner else {}) if runner and runner.store.has(c.id) else exp.method.shared_alone(model)
        with ctx:
            out = generate(model, [e.prompt for e in ex], task._pad_id, task._eos_id, task.max_new_tokens)
        answers = task._tokenizer.batch_decode(out, skip_special_tokens=True)
        h, s = rh.points(prompts, answers), rs.points(prompts, answers)
        print(f"--- {tag} client {c.name} weights {c.weights}")
        for p, a, x, y in zip(prompts, answers, h, s):
            print(f"  {p.strip()[-60:]!r} -> {a!r}  helpful {x:.0f} harmless {y:.0f}")

show("base")
runner = Runner(exp, None, None)
runner.reference = runner.references()
t = time.perf_counter()
for r in range(1, rounds + 1):
    rec = runner.round(r)
    print(f"round {r}: train_reward {rec['train_reward']:.1f} train_s {rec['timing']['train_s']:.0f} eval {rec['eval'] and rec['eval']['score']}", flush=True)
print("train+eval s", time.perf_counter() - t)
show("after", runner)
