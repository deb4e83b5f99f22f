"""The reinforcement-learning update (GRPO) on the tiny model."""

import pytest
import torch

from pflbench.training.rl import RLConfig, group_advantages, rl_steps, sample


def test_advantages_are_normalised_within_each_group():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    a = group_advantages(r, 4)
    first = (r[:4] - r[:4].mean()) / (r[:4].std() + 1e-4)
    assert torch.allclose(a[:4], first)
    assert torch.all(a[4:] == 0)  # a group that all agrees teaches nothing


def test_bad_rl_settings_are_refused():
    with pytest.raises(ValueError):
        RLConfig(group_size=1)
    with pytest.raises(ValueError):
        RLConfig(clip=1.5)


@pytest.fixture
def policy():
    from pflbench.models import load_model
    from pflbench.models.adapters import add_lora

    loaded = load_model("tiny")
    names = add_lora(loaded.model, "local", 8, 16, ("q_proj", "v_proj"))
    params = dict(loaded.model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in names)
    prompts = [loaded.tokenizer(f"Q: Tell me about {w}.\nA:")["input_ids"] for w in ("kings", "rivers", "swords", "roses", "night", "war")]
    return loaded.model, loaded.tokenizer, [params[n] for n in names], prompts


def _rate(model, tok, prompts, reward, seed=123):
    _, _, _, responses = sample(model, prompts, RLConfig(group_size=8, max_new_tokens=8), tok.pad_token_id, tok.eos_token_id, seed)
    texts = tok.batch_decode(responses, skip_special_tokens=True)
    return sum(reward(None, texts)) / len(texts)


def test_rl_raises_a_toy_reward_within_a_few_dozen_steps(policy):
    """Reward 1 when the response says "my": about 1 response in 8 does before training."""
    model, tok, params, prompts = policy
    reward = lambda _, texts: [float("my" in t.lower().split()) for t in texts]  # noqa: E731
    before = _rate(model, tok, prompts, reward)
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield [prompts[i] for i in torch.randint(0, len(prompts), (4,), generator=gen).tolist()]

    stats = rl_steps(model, tok, params, batches(), reward, 30, 1e-2, RLConfig(group_size=4, max_new_tokens=8), gen)
    after = _rate(model, tok, prompts, reward)
    assert before < 0.3 and after > before + 0.3, (before, after)
    assert stats.kl > 0  # the policy moved away from the reference


def test_a_zero_reward_signal_leaves_the_policy_unchanged(policy):
    """Every response rewarded alike: zero advantages, and the KL term is zero while the
    policy equals its reference, so nothing moves."""
    model, tok, params, prompts = policy
    before = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(0)
    rl_steps(model, tok, params, iter(lambda: prompts[:2], None), lambda _, t: [1.0] * len(t), 2, 1e-2, RLConfig(), gen)
    assert all(torch.equal(a, b) for a, b in zip(before, params))
