"""Real language models shipped as GGUF files inside PyPI packages (``smollm2-135m``,
``gemma3-270m``): one code path for both.

The packages are never imported, only the files they ship are read (found with
``importlib.util.find_spec``). The first load dequantizes the GGUF with transformers' reader
(needs ``gguf``) and writes fp32 safetensors, config and tokenizer to ``cache_dir()/NAME``;
later loads read that folder in about a second. The conversion happens in a temporary folder
renamed into place at the end, so an interrupted conversion leaves nothing half written.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import ClassVar

import torch

from pflbench.errors import UserError
from pflbench.models.base import LoadedModel, ModelSource, Progress, build_into, cache_dir


def package_dir(module: str, missing: str) -> Path:
    """The folder of an installed asset package, without importing it (``missing``: the
    one-line error when it is not installed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(missing)
    return Path(list(spec.submodule_search_locations)[0])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class GGUFModel(ModelSource):
    """A registered model read from a packaged GGUF file. A subclass names its packages and
    says where the file is (``gguf_file``, which may assemble it into ``workdir``)."""

    install: ClassVar[str] = ""  # the pip command that installs the files
    gguf_name: ClassVar[str] = ""

    def gguf_file(self, workdir: Path) -> Path:
        raise NotImplementedError

    def cached(self) -> Path:
        return cache_dir() / self.name

    def offline(self) -> bool:
        if (self.cached() / "model.safetensors").exists():
            return True
        try:
            self.locate()
        except UserError:
            return False
        return True

    def locate(self) -> None:
        """Raise a UserError naming the install command when the packaged file is missing."""
        raise NotImplementedError

    def load(self, progress: Progress | None = None) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.cached()
        if not (path / "model.safetensors").exists():
            self.locate()
            label = f"converting {self.name} GGUF to safetensors (first run only)"
            if progress:
                progress(label, 0, 1)
            build_into(path, lambda tmp: _convert(self.gguf_file(tmp), tmp))
            if progress:
                progress(label, 1, 1)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path)
        return LoadedModel(name=self.name, model=model, tokenizer=tok, source=str(path))


def _convert(src: Path, out: Path) -> None:
    """Dequantize ``src`` to fp32 and write config, weights and tokenizer into ``out``; the
    GGUF file itself is removed if it was assembled inside ``out``."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    # the weights are dequantized fp32 now, but transformers still marks the model as
    # GGUF-quantized and refuses save_pretrained: write config and weights directly
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if src.parent == out:
        src.unlink()
    config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(out)
