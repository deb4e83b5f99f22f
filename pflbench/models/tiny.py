"""``tiny``: a ~0.5M-parameter Llama-style causal LM for CPU benchmarks, built offline.

The first load trains a byte-level BPE tokenizer (``tokenizers``) and pretrains the model
centrally on the plays reserved in ``pflbench.data.shakespeare.PRETRAIN_PLAYS`` (never a
client's data), then caches both as safetensors under ``cache_dir()/tiny-v1``. Later loads
read the cache in well under a second. Everything is seeded: every machine builds the
same model.
"""

from __future__ import annotations

import json

import torch

from pflbench.data.shakespeare import pretraining_text
from pflbench.models.base import LoadedModel, ModelSource, Progress, build_into, cache_dir, read_cached

VERSION = "tiny-v1"
VOCAB = 1024
BLOCK = 128
CONFIG = dict(
    vocab_size=VOCAB, hidden_size=96, intermediate_size=256, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
    tie_word_embeddings=True, attention_dropout=0.0, rms_norm_eps=1e-5,
)
PRETRAIN_STEPS = 400
PRETRAIN_BATCH = 16
PRETRAIN_LR = 3e-3
SEED = 1234


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def build(target, progress: Progress | None = None) -> None:
    """Train tokenizer and model, write them to ``target`` (a directory)."""
    from transformers import LlamaConfig, LlamaForCausalLM


    texts = pretraining_text()
    tokenizer = _train_tokenizer(texts)
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"] + [tokenizer.eos_token_id])
    stream = torch.tensor(ids, dtype=torch.long)

    torch.manual_seed(SEED)
    config = LlamaConfig(**CONFIG, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / PRETRAIN_STEPS))

    def batch():
        starts = torch.randint(0, len(stream) - BLOCK - 1, (PRETRAIN_BATCH,), generator=gen)
        ids_ = torch.stack([stream[s : s + BLOCK] for s in starts])
        return {"input_ids": ids_, "labels": ids_}

    loss = _train(model, batch, opt, PRETRAIN_STEPS, "pretraining the tiny model (first run only)", progress, sched)
    _save(model, tokenizer, target, {"version": VERSION, "final_loss": loss, "tokens": len(ids)})


def _train(model, batch, opt, steps: int, label: str, progress: Progress | None, sched=None) -> float:
    """``steps`` steps of ``opt`` on ``batch()`` with gradient clipping at 1; the last loss."""
    model.train()
    for step in range(steps):
        loss = model(**batch()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        if progress and (step + 1) % 10 == 0:
            progress(label, step + 1, steps)
    model.eval()
    return loss.item()


def _save(model, tokenizer, target, meta: dict) -> None:
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    (target / "pflbench.json").write_text(json.dumps(meta))


CHAT_VERSION = "tiny-chat-v1"
CHAT_STEPS = 300
CHAT_BATCH = 32
CHAT_LR = 2e-3


def build_chat(target, progress: Progress | None = None) -> None:
    """``tiny`` after a short central SFT (every parameter) on ``chat_demonstrations``
    (``models.chat``): a policy that already says both kinds of answer, for reinforcement
    learning to choose from."""
    from pflbench.models.chat import tune

    base = _load_cached(VERSION, build, progress)
    loss, count = tune(base.model, base.tokenizer, CHAT_STEPS, CHAT_BATCH, CHAT_LR,
                       "tuning tiny-chat on demonstrations (first run only)", progress, _train)
    _save(base.model, base.tokenizer, target, {"version": CHAT_VERSION, "base": VERSION, "final_loss": loss, "demonstrations": count})


def _load_cached(version: str, builder, progress: Progress | None, name: str = "tiny") -> LoadedModel:
    """The model cached under ``cache_dir()/version``, built there by ``builder`` first if needed."""
    path = cache_dir() / version
    if not (path / "pflbench.json").exists():
        build_into(path, lambda tmp: builder(tmp, progress))
    return read_cached(path, name)


class TinyModel(ModelSource):
    name = "tiny"
    description = "~0.5M-parameter Llama-style LM, pretrained offline on held-out plays (default)"
    parameters = 541_536
    licence = "Apache-2.0 (built by the suite)"

    def load(self, progress: Progress | None = None) -> LoadedModel:
        return _load_cached(VERSION, build, progress, self.name)

    def architecture(self):
        from transformers import LlamaConfig

        return LlamaConfig(**CONFIG)


class TinyChat(ModelSource):
    name = "tiny-chat"
    description = "tiny after a central SFT on demonstrations disjoint from synth-align's clients (the RL starting policy)"
    parameters = 541_536
    licence = "Apache-2.0 (built by the suite)"

    def load(self, progress: Progress | None = None) -> LoadedModel:
        return _load_cached(CHAT_VERSION, build_chat, progress, self.name)

    architecture = TinyModel.architecture  # the same network, other weights


def tokenizer(progress: Progress | None = None):
    """The tiny model's tokenizer (building the model first if it is not cached)."""
    from transformers import PreTrainedTokenizerFast

    path = cache_dir() / VERSION
    if not (path / "pflbench.json").exists():
        _load_cached(VERSION, build, progress)
    return PreTrainedTokenizerFast.from_pretrained(path)
