"""What every model of the zoo is: the loaded model, a registered model's source, the cache
folder and the build-then-rename that fills it. The zoo (``pflbench.models``) and each
registered model import these; nothing here knows a particular model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

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

    def architecture(self) -> Any:
        """The model's transformers config, without its weights (``--init random``, ``pflbench
        budget show``): by default read from ``config_file``; None when the source has none."""
        return read_config(CONFIGS / self.config_file) if self.config_file else None

    def offline(self) -> bool:
        """Whether ``load`` works without a network (its files are installed or cached)."""
        return True


CONFIGS = Path(__file__).parent / "configs"  # architecture configs shipped with the suite


def read_config(path: Path) -> Any:
    """A ``config.json`` (a Hugging Face model's, or any with ``model_type``) as a transformers
    config; one line if it is not one."""
    import json

    from transformers import AutoConfig

    from pflbench.errors import UserError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        kind = data.pop("model_type")
        # "_source": where the suite's shipped configs came from (docs/reference/payloads.md)
        return AutoConfig.for_model(kind, **{k: v for k, v in data.items() if k != "architectures" and not k.startswith("_")})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as exc:
        raise UserError(f"{path} is not a readable config.json ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    except KeyError:
        raise UserError(f"{path} has no model_type: not a transformers config.json") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}".splitlines()[0]) from None


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


def weights_fingerprint(module: Any) -> str:
    """The first 12 hex digits of the sha256 of a module's state dict (each tensor's name,
    dtype, shape and bytes, in name order), read in place, without a copy. Two runs with the
    same fingerprint started from the same weights to the bit: the tiny models and the reward
    models are trained on the machine that first needs them, and float sums follow its CPU's
    kernels, so a build on another machine differs. Tied weights (an embedding that is also the
    output layer) are read once: 0.5 s for SmolLM2-135M, 0.8 s for Gemma 3 270M on a 2-core CPU."""
    import hashlib

    import torch

    digest, seen = hashlib.sha256(), {}
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if key in seen and tensor.numel():  # a tied weight (Gemma's embedding and output layer): named, read once
            digest.update(f"={seen[key]};".encode())
            continue
        seen[key] = name
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:12]


def read_cached(path: Path, name: str) -> "LoadedModel":
    """A model the suite built and cached in ``path`` (fp32), with its tokenizer; one line
    naming the folder to delete when a cache file is truncated or edited."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pflbench.errors import UserError

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # a truncated or edited cache file: say which folder to delete
        raise UserError(f"the cached model {name} in {path} cannot be read ({type(exc).__name__}); "
                        f"delete that folder and it is rebuilt on the next run") from None
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, source=str(path))
