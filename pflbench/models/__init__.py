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
    parameters: ClassVar[int] = 0  # the loaded model's parameter count (checked by a test); 0: unknown
    licence: ClassVar[str] = "?"  # the weights' licence or terms
    # the model's architecture config as shipped with the suite (models/configs/NAME.json):
    # what ``--init random`` builds when the weights are not at hand
    config_file: ClassVar[str] = ""

    def load(self, progress: Progress | None = None) -> LoadedModel:
        raise NotImplementedError

    def offline(self) -> bool:
        """Whether ``load`` works without a network (its files are installed or cached)."""
        return True


def build_into(target: Path, build: Callable[[Path], None]) -> None:
    """Run ``build(folder)`` in a fresh temporary folder beside ``target`` and rename it into
    place when it returns: an interrupted or failed build leaves nothing half written, and
    when another process finished ``target`` first, its copy is kept."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def describe_size(parameters: int) -> str:
    """``134.5M``, ``540k``: a parameter count for a listing (``?`` when unknown)."""
    if parameters <= 0:
        return "?"
    return f"{parameters / 1e6:.1f}M" if parameters >= 1e6 else f"{parameters / 1e3:.0f}k"


def cache_dir() -> Path:
    """``$PFLBENCH_CACHE``, else ``$XDG_CACHE_HOME/pflbench``, else ``~/.cache/pflbench``."""
    root = os.environ.get("PFLBENCH_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pflbench"


CONFIGS = Path(__file__).parent / "configs"  # architecture configs shipped with the suite


def load_model(name: str, progress: Progress | None = None, init: str = "pretrained") -> LoadedModel:
    """The model ``name`` with its weights; ``init="random"``: its architecture only (see
    ``random_model``)."""
    from transformers.utils import logging as hf_logging

    from pflbench import registry

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
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from pflbench import registry
    from pflbench.models.tiny import tokenizer as tiny_tokenizer

    if name in registry.models.names() and registry.models.get(name).config_file:
        path = CONFIGS / registry.models.get(name).config_file
    elif (CONFIGS / f"{name}.json").exists():
        path = CONFIGS / f"{name}.json"
    elif Path(name).is_file():
        path = Path(name)
    else:
        shipped = sorted(p.stem for p in CONFIGS.glob("*.json"))
        raise UserError(f"--init random needs an architecture: a registered model with a shipped config, "
                        f"one of {', '.join(shipped)}, or a config.json file; got {name!r}")
    data = json.loads(path.read_text())
    config = AutoConfig.for_model(data.pop("model_type"), **{k: v for k, v in data.items() if k != "architectures"})
    tok = tiny_tokenizer(progress)
    if config.vocab_size < len(tok):
        raise UserError(f"{path}: vocab_size {config.vocab_size} is below the tiny tokenizer's {len(tok)}")
    config.pad_token_id, config.eos_token_id, config.bos_token_id = tok.pad_token_id, tok.eos_token_id, None
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return LoadedModel(name=name, model=model, tokenizer=tok, source=f"random init from {path}")


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
