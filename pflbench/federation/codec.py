"""Payload codecs: the one place where uplink and downlink bytes come from.

A payload is a 16-byte header followed by the codec's body. Tensor names and shapes are
not sent each round: both ends agree on a ``Schema`` (the ordered shared tensors) when the
run starts, and the header carries its CRC-32 so a payload decoded against the wrong
schema fails loudly instead of scrambling weights.

Header (little-endian, 16 bytes)::

    magic    4s  b"PFLB"
    version  B   1
    codec    B   codec id (fp32 = 1)
    flags    H   0 (reserved)
    schema   I   CRC-32 of the schema (names and shapes, in order)
    count    I   number of values described (sum of the tensors' numel)

The byte count the suite reports is ``len(payload)``, nothing else.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from pflbench.errors import UserError

MAGIC = b"PFLB"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")
HEADER_BYTES = HEADER.size  # 16


@dataclass(frozen=True)
class Schema:
    """The ordered tensors a payload carries."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, tensors: dict[str, torch.Tensor]) -> "Schema":
        return cls(tuple(tensors), tuple(tuple(t.shape) for t in tensors.values()))

    @property
    def numel(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def crc(self) -> int:
        text = ";".join(f"{n}:{'x'.join(map(str, s))}" for n, s in zip(self.names, self.shapes))
        return zlib.crc32(text.encode())

    def __len__(self) -> int:
        return len(self.names)


class Codec:
    """Turns a dict of tensors into bytes and back. Subclasses set ``name`` and ``id``."""

    name: str = ""
    id: int = 0
    description: str = ""

    def encode(self, tensors: dict[str, torch.Tensor], schema: Schema) -> bytes:
        flat = torch.cat([tensors[n].detach().reshape(-1).float() for n in schema.names]) if len(schema) else torch.zeros(0)
        return HEADER.pack(MAGIC, VERSION, self.id, 0, schema.crc, schema.numel) + self.encode_body(flat)

    def decode(self, payload: bytes, schema: Schema) -> dict[str, torch.Tensor]:
        magic, version, codec_id, _flags, crc, count = HEADER.unpack_from(payload)
        if magic != MAGIC or version != VERSION:
            raise ValueError("not a pflbench payload (bad magic or version)")
        if codec_id != self.id:
            raise ValueError(f"payload was encoded with codec id {codec_id}, not {self.name} ({self.id})")
        if crc != schema.crc or count != schema.numel:
            raise ValueError("payload does not match the agreed tensor schema")
        flat = self.decode_body(memoryview(payload)[HEADER_BYTES:], count)
        out, offset = {}, 0
        for name, shape in zip(schema.names, schema.shapes):
            n = int(np.prod(shape, dtype=np.int64))
            out[name] = flat[offset : offset + n].reshape(shape)
            offset += n
        return out

    # the body: subclasses implement these two
    def encode_body(self, flat: torch.Tensor) -> bytes:
        raise NotImplementedError

    def decode_body(self, body: memoryview, count: int) -> torch.Tensor:
        raise NotImplementedError


class FP32Codec(Codec):
    """Dense float32, little-endian: 4 bytes a value."""

    name, id = "fp32", 1
    description = "dense float32, 4 bytes per value"

    def encode_body(self, flat: torch.Tensor) -> bytes:
        return flat.numpy().astype("<f4", copy=False).tobytes()

    def decode_body(self, body: memoryview, count: int) -> torch.Tensor:
        if len(body) != 4 * count:
            raise ValueError(f"fp32 body holds {len(body)} bytes, expected {4 * count}")
        return torch.from_numpy(np.frombuffer(body, dtype="<f4").copy())


CODECS: dict[str, type[Codec]] = {c.name: c for c in (FP32Codec,)}


def make_codec(name: str) -> Codec:
    if name not in CODECS:
        raise UserError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}")
    return CODECS[name]()
