"""Local objectives, chosen by the task's kind: supervised steps (``pflbench.methods.base.sft_steps``)
and the reinforcement-learning update (``rl.rl_steps``)."""
