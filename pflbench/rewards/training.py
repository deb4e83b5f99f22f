"""Training a reward model with trl's RewardTrainer, once, and reading it back from the cache."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pflbench.models import build_into, load_model

# part of every trained reward model's cache key (``r3`` in the folder name): raise it when the
# training recipe below changes, so no cache trained the old way is read as the new one.
# 2: fp32 without gradient checkpointing on every machine (1 had trl's bf16 autocast default).
# 3: responses are scored with the end-of-sequence token trl trains with (2 read the reward one
#    token early, off the position the head learnt: 99% preference accuracy in training was
#    76-99% held out depending on the machine's float kernels).
RECIPE = 3
HELD_OUT = 0.2  # share of the pairs kept out of training to measure preference accuracy


def split_pairs(pairs: list[dict[str, str]], seed: int) -> tuple[list[dict], list[dict]]:
    order = np.random.default_rng([seed, 0x5E3D]).permutation(len(pairs))
    n_test = max(1, int(len(pairs) * HELD_OUT))
    return [pairs[i] for i in order[n_test:]], [pairs[i] for i in order[:n_test]]


def preference_accuracy(reward, pairs: list[dict[str, str]]) -> float:
    """Share of pairs whose chosen response gets the higher reward, in points."""
    return held_out_stats(reward, pairs)["held_out_accuracy"]


def held_out_stats(reward, pairs: list[dict[str, str]]) -> dict[str, float]:
    """Preference accuracy on ``pairs`` and the mean raw reward of their chosen and rejected
    answers (the two ends of the reward's points scale)."""
    prompts = [p["prompt"] for p in pairs]
    chosen = reward.score(prompts, [p["chosen"] for p in pairs])
    rejected = reward.score(prompts, [p["rejected"] for p in pairs])
    return {"held_out_accuracy": 100.0 * float(np.mean([c > r for c, r in zip(chosen, rejected)])),
            "chosen_mean": float(np.mean(chosen)), "rejected_mean": float(np.mean(rejected))}


def _backbone_path(name: str) -> Path:
    loaded = load_model(name)
    if loaded.source and Path(loaded.source).is_dir():
        return Path(loaded.source)
    raise ValueError(f"backbone {name!r} has no local weights directory")


def train_reward_model(reward, progress=None) -> None:
    """Train ``reward`` (a TrainedReward) on its pairs and write it to ``reward.path``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import RewardConfig, RewardTrainer


    hf_logging.set_verbosity_error()
    train, test = split_pairs(reward.pairs(), reward.seed)
    source = _backbone_path(reward.backbone)
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(reward.seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    label = f"training reward model {reward.name} (first use only)"

    class Report(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if progress:
                progress(label, state.global_step, reward.steps)

    def build(tmp: Path) -> None:
        args = RewardConfig(
            output_dir=str(tmp / "trainer"), max_steps=reward.steps, per_device_train_batch_size=16,
            learning_rate=reward.lr, save_strategy="no", report_to=[], logging_strategy="no", max_length=256,
            seed=reward.seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0,
            # fp32 and no recomputation, whatever the machine: trl defaults to bf16 autocast, which
            # a CPU without bf16 instructions emulates ~100x slower, and which made the model (and
            # its points scale) depend on the CPU it was trained on; checkpointing only saves memory
            bf16=False, fp16=False, activation_checkpointing=False,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(train), processing_class=tokenizer,
                                callbacks=[Report()])
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its metrics; stdout is for results
            trainer.train()
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        reward.model, reward.tokenizer = _load(tmp)  # measured as every later use reads it: from the saved files
        try:
            stats = held_out_stats(reward, test)
        finally:
            reward.model = reward.tokenizer = None
        meta = {"held_out_pairs": len(test), "train_pairs": len(train), "steps": reward.steps, **stats}
        (tmp / "pflbench.json").write_text(json.dumps(meta, indent=2))

    build_into(reward.path, build)


def _load(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def load_classifier(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    model, tokenizer = _load(path)
    return model, tokenizer, json.loads((path / "pflbench.json").read_text())
