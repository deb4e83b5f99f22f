"""Reward models: they score batches of (prompt, response) pairs, higher is better.

Three kinds, all found by name through ``resolve_reward``:

- **trained by the suite** (``TrainedReward``): a sequence-classification head on a registered
  backbone (the tiny model by default), trained once with trl's RewardTrainer on preference
  pairs (chosen, rejected) and cached as safetensors under
  ``cache_dir()/rewards/NAME-BACKBONE-seedS``, with its held-out preference accuracy;
- **a Hugging Face sequence-classification model** (``HFReward``), by hub id or local path,
  for any name that is not registered;
- **a Python callable** ``fn(prompts, responses) -> list[float]`` registered under the
  ``pflbench.rewards`` entry-point group (rule-based rewards).

The built-in ones (``pflbench list rewards``) are registered in the suite's ``pyproject.toml``
exactly as a plugin's would be.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, ClassVar

from pflbench import registry
from pflbench.data.cards import resolve_task
from pflbench.errors import UserError
from pflbench.models import cache_dir
from pflbench.rewards.mixture import Mixture
from pflbench.rewards.training import RECIPE, load_classifier, train_reward_model

EVAL_BATCH = 32


class Reward:
    """A loaded reward model."""

    name: str = ""
    kind: str = ""
    description: str = ""

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        raise NotImplementedError

    def points(self, prompts: list[str], responses: list[str]) -> list[float]:
        """The reward on the scale mixtures combine (``pflbench.rewards.mixture``): here a
        rule's [0, 1] times 100; trained and Hugging Face models say their own."""
        return [100.0 * x for x in self.score(prompts, responses)]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description}


class RuleReward(Reward):
    """A registered callable."""

    kind = "rule"

    def __init__(self, name: str, fn: Callable[[list[str], list[str]], list[float]]):
        self.name, self.fn = name, fn
        self.description = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""

    def score(self, prompts, responses):
        return [float(x) for x in self.fn(prompts, responses)]


class _ClassifierReward(Reward):
    """A sequence-classification model with one output: the reward of prompt + response."""

    model: Any
    tokenizer: Any

    def end_token(self) -> str:
        """What ends every response as the model was trained to read it: nothing by default."""
        return ""

    def score(self, prompts, responses):
        import torch

        out: list[float] = []
        end = self.end_token()
        texts = [p + r if not end or r.endswith(end) else p + r + end for p, r in zip(prompts, responses)]
        self.tokenizer.truncation_side = "left"  # a long dialogue loses its beginning, never the response
        self.model.eval()
        with torch.no_grad():
            for b in range(0, len(texts), EVAL_BATCH):
                enc = self.tokenizer(texts[b : b + EVAL_BATCH], return_tensors="pt", padding=True, truncation=True, max_length=256)
                out.extend(self.model(**enc.to(self.model.device)).logits[:, 0].float().tolist())
        return out


class TrainedReward(_ClassifierReward):
    """A reward model the suite trains from preference pairs (subclasses say which)."""

    kind = "trained"
    backbone: ClassVar[str] = "tiny"
    seed: ClassVar[int] = 0
    version: ClassVar[int] = 1  # part of the cache key: raise it when ``pairs`` change
    steps: ClassVar[int] = 150
    lr: ClassVar[float] = 1e-3

    def pairs(self) -> list[dict[str, str]]:
        """Preference pairs: ``prompt``, ``chosen``, ``rejected``."""
        raise NotImplementedError

    def __init__(self, name: str):
        self.name = name
        self.description = (type(self).__doc__ or "").strip().splitlines()[0]
        self.model = self.tokenizer = None
        self.meta: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        return cache_dir() / "rewards" / f"{self.name}-v{self.version}-r{RECIPE}-{self.backbone}-seed{self.seed}"

    def load(self, progress=None) -> "TrainedReward":
        if not (self.path / "pflbench.json").exists():
            train_reward_model(self, progress)
        try:
            self.model, self.tokenizer, self.meta = load_classifier(self.path)
        except Exception as exc:  # a truncated or edited cache: say which folder to delete
            raise UserError(f"the cached reward model {self.name} in {self.path} cannot be read ({type(exc).__name__}); "
                            f"delete that folder and it is retrained on next use") from None
        return self

    def end_token(self) -> str:
        """The tokenizer's end-of-sequence token: trl's RewardTrainer appends it to every
        chosen and rejected answer, so the score head learnt to read the reward there."""
        return self.tokenizer.eos_token or ""

    def points(self, prompts, responses):
        """0 at the mean reward of the held-out pairs' rejected answers, 100 at their chosen
        answers' mean."""
        lo, hi = self.meta["rejected_mean"], self.meta["chosen_mean"]
        return [100.0 * (x - lo) / (hi - lo) for x in self.score(prompts, responses)]

    def info(self):
        return {**super().info(), "backbone": self.backbone, "seed": self.seed, "cache": str(self.path), **self.meta}


class CardReward(TrainedReward):
    """A reward model trained on a preference card's pairs (its prompt, reference and rejected
    templates: chosen and rejected answers), from the hub or a ``--data-dir`` copy. The cache
    key adds a fingerprint of the pairs, so another copy of the data trains another model."""

    card: ClassVar[str] = ""
    max_pairs: ClassVar[int] = 2000  # a fixed random subset of the card's rows, for CPU budgets
    prompt_chars: ClassVar[int] = 300  # the end of a long dialogue: what the answers respond to
    answer_chars: ClassVar[int] = 300  # the start of each answer

    def pairs(self):
        import numpy as np


        task = resolve_task(self.card)
        if task.kind != "preference":
            raise UserError(f"reward {self.name}: card {self.card!r} is of kind {task.kind}, not preference")
        rows = task.records()
        if len(rows) > self.max_pairs:
            keep = np.random.default_rng([self.seed, 0xCA4D]).choice(len(rows), self.max_pairs, replace=False)
            rows = [rows[i] for i in sorted(keep)]
        # cut so that a pair fits the reward model's window (RewardTrainer drops longer ones)
        return [{"prompt": task._fill(task.prompt, r)[-self.prompt_chars :],
                 "chosen": task._fill(task.reference, r)[: self.answer_chars],
                 "rejected": task._fill(task.rejected, r)[: self.answer_chars]} for r in rows]

    @property
    def path(self) -> Path:
        import hashlib
        import json

        if not hasattr(self, "_fingerprint"):
            self._fingerprint = hashlib.sha256(json.dumps(self.pairs(), sort_keys=True).encode()).hexdigest()[:10]
        base = super().path
        return base.with_name(f"{base.name}-{self._fingerprint}")


class HFReward(_ClassifierReward):
    """Any Hugging Face sequence-classification reward model, by id or local path."""

    kind = "huggingface"

    def __init__(self, name: str):
        self.name = name
        self.description = f"sequence-classification model {name}"

    def load(self, progress=None) -> "HFReward":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer


        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        local_only = offline or Path(self.name).exists()
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(self.name, local_files_only=local_only)
            self.tokenizer = AutoTokenizer.from_pretrained(self.name, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot load reward model {self.name!r}: not a registered reward, a local model directory or a cached "
                f"hub model{' (HF_HUB_OFFLINE is set)' if offline else ''}; registered: {', '.join(registry.rewards.names())} "
                f"({type(exc).__name__})"
            ) from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        return self

    def points(self, prompts, responses):
        """sigmoid(reward) times 100: no preference pairs to calibrate against."""
        import math

        return [100.0 / (1.0 + math.exp(-x)) for x in self.score(prompts, responses)]


def resolve_reward(name: str, progress=None) -> Reward:
    """A registered reward (trained or rule), else a Hugging Face id or path; loaded, and
    trained first where a trained one is not cached yet."""
    from transformers.utils import logging as hf_logging


    hf_logging.disable_progress_bar()  # the CLI draws its own progress
    if name in registry.rewards.names():
        obj = registry.rewards.get(name)
        if isinstance(obj, type) and issubclass(obj, TrainedReward):
            return obj(name).load(progress)
        if isinstance(obj, type) and issubclass(obj, Reward):
            return obj().load(progress) if hasattr(obj, "load") else obj()
        if callable(obj):
            return RuleReward(name, obj)
        raise UserError(f"reward {name!r} is registered as {type(obj).__name__}, not a Reward class or a callable")
    return HFReward(name).load(progress)


def load_rewards(task, progress=None, device=None):
    """A reward card's reward models (``rewards.mixture.Mixture``), loaded once per task (and
    trained first where one is not cached yet), on ``device`` when given."""
    if task._mixture is None:
        task._mixture = Mixture({role: resolve_reward(name, progress) for role, name in task.rewards.items()})
    if device is not None:
        for r in task._mixture.rewards.values():
            if getattr(r, "model", None) is not None:
                r.model.to(device)
    return task._mixture
