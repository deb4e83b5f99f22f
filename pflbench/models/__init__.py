"""The model zoo: registered names (``tiny``, ``smollm2-135m``, plugins), or any Hugging
Face id or local path. One model is loaded per run; clients differ only in small tensors."""

from __future__ import annotations

import os
from pathlib import Path

from pflbench import registry
from pflbench.errors import UserError
from pflbench.models.base import CONFIGS, LoadedModel, ModelSource, Progress, build_into, cache_dir, describe_size, read_config, weights_fingerprint

__all__ = ["LoadedModel", "ModelSource", "Progress", "architecture", "build_into", "cache_dir", "describe_size",
           "load_model", "random_model", "weights_fingerprint"]


def load_model(name: str, progress: Progress | None = None, init: str = "pretrained") -> LoadedModel:
    """The model ``name`` with its weights; ``init="random"``: its architecture only (see
    ``random_model``)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI draws its own progress
    if init == "random":
        loaded = random_model(name, progress)
    elif name in registry.models.names():
        loaded = registry.models.get(name)().load(progress)
    else:
        loaded = _load_pretrained(name)
    tok = loaded.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    loaded.model.config.use_cache = False
    return loaded


def random_model(name: str, progress: Progress | None = None) -> LoadedModel:
    """A registered model's architecture (its config as shipped in ``models/configs``), or a
    ``config.json`` file or a shipped config's name (``qwen2.5-0.5b``), with random weights
    from the seeded torch generator: for timing a model's size where its weights are not at
    hand (a lent GPU machine). Text is read with the tiny model's 1,024-token tokenizer, whose
    ids the model's larger vocabulary covers, so the compute per token is the real model's.
    Its scores mean nothing: tables leave such runs out."""
    import torch
    from transformers import AutoModelForCausalLM

    from pflbench.models.tiny import tokenizer as tiny_tokenizer  # deferred: the zoo lists models without loading tokenizers

    config, where = architecture(name, "--init random")
    tok = tiny_tokenizer(progress)
    if config.vocab_size < len(tok):
        raise UserError(f"{where}: vocab_size {config.vocab_size} is below the tiny tokenizer's {len(tok)}")
    config.pad_token_id, config.eos_token_id, config.bos_token_id = tok.pad_token_id, tok.eos_token_id, None
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return LoadedModel(name=name, model=model, tokenizer=tok, source=f"random init from {where}")


def architecture(name: str, what: str = "this") -> tuple[object, str]:
    """A model's architecture without its weights -> (transformers config, where it came from):
    a registered model's (``ModelSource.architecture``), a shipped config's name
    (``qwen2.5-0.5b``, ``models/configs``), a ``config.json`` file or a folder holding one, or
    a Hugging Face id whose config is in the local cache. One line naming the choices, else."""
    if name in registry.models.names():
        config = registry.models.get(name)().architecture()
        if config is not None:
            return config, f"model {name}"
    elif (CONFIGS / f"{name}.json").exists():
        return read_config(CONFIGS / f"{name}.json"), f"{CONFIGS.name}/{name}.json"
    elif Path(name).is_file():
        return read_config(Path(name)), name
    elif (Path(name) / "config.json").is_file():
        return read_config(Path(name) / "config.json"), str(Path(name) / "config.json")
    else:
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(name, local_files_only=True), f"{name} (Hugging Face cache)"
        except (OSError, ValueError):
            pass
    shipped = sorted(p.stem for p in CONFIGS.glob("*.json"))
    raise UserError(f"{what} needs an architecture: a registered model with a config, one of {', '.join(shipped)}, "
                    f"a config.json file or a folder holding one, or a Hugging Face id in the local cache; got {name!r}")


def _load_pretrained(name: str) -> LoadedModel:
    """A Hugging Face id or a local directory, from local files first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    local_only = offline or Path(name).exists()
    try:
        model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only, dtype="float32")
        tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        hint = "not a local model directory, and not in the Hugging Face cache" + (" (HF_HUB_OFFLINE is set)" if offline else "")
        raise UserError(
            f"cannot load model {name!r}: {hint}; registered models: {', '.join(registry.models.names())} "
            f"({type(exc).__name__})"
        ) from None
    return LoadedModel(name=name, model=model, tokenizer=tok, source=str(name))
