"""The model zoo: registered names (``tiny``, ``smollm2-135m``, plugins), or any Hugging
Face id or local path. One model is loaded per run; clients differ only in small tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from pflbench.errors import UserError

# progress(label, done, total): how long work (pretraining, conversion) reports itself
Progress = Callable[[str, int, int], None]


@dataclass
class LoadedModel:
    name: str
    model: Any  # a transformers causal LM
    tokenizer: Any  # a transformers tokenizer with pad and eos tokens
    source: str  # where the weights came from


class ModelSource:
    """A registered model: ``load`` returns a ready ``LoadedModel`` (building and caching
    it the first time if needed)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def load(self, progress: Progress | None = None) -> LoadedModel:
        raise NotImplementedError


def cache_dir() -> Path:
    """``$PFLBENCH_CACHE``, else ``$XDG_CACHE_HOME/pflbench``, else ``~/.cache/pflbench``."""
    root = os.environ.get("PFLBENCH_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pflbench"


def load_model(name: str, progress: Progress | None = None) -> LoadedModel:
    from transformers.utils import logging as hf_logging

    from pflbench import registry

    hf_logging.disable_progress_bar()  # the CLI draws its own progress
    if name in registry.models.names():
        loaded = registry.models.get(name)().load(progress)
    else:
        loaded = _load_pretrained(name)
    tok = loaded.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    loaded.model.config.use_cache = False
    return loaded


def _load_pretrained(name: str) -> LoadedModel:
    """A Hugging Face id or a local directory, from local files first."""
    from pflbench import registry
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
