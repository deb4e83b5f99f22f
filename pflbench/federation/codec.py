"""Payload codecs: the one place where uplink and downlink bytes come from.

A payload is a 16-byte header followed by the codec's body. Tensor names and shapes are
not sent each round: both ends agree on a ``Schema`` (the ordered shared tensors) when the
run starts, and the header carries its CRC-32 so a payload decoded against the wrong
schema fails loudly instead of scrambling weights.

Header (little-endian, 16 bytes)::

    magic    4s  b"PFLB"
    version  B   1
    codec    B   codec id (fp32 1, fp16 2, bf16 3, int8 4, topk 5)
    flags    H   codec-specific (topk: 1 = positions as a bitmap); 0x8000: a subset
    schema   I   CRC-32 of the schema (names and shapes, in order)
    count    I   number of values described (sum of the tensors' numel)

A client may upload a subset of the schema's tensors (``LocalResult.upload``): flag 0x8000 is
set and a bitmap of ceil(tensors / 8) bytes (bit i: the schema's i-th tensor is present,
least significant bit first) follows the header; the body then covers the present tensors
only, in schema order. A full upload has no bitmap.

The byte count the suite reports is ``len(payload)``, nothing else.
"""

from __future__ import annotations

import math
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
SUBSET = 0x8000  # header flag: a bitmap of the tensors present follows the header


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

    def subset(self, names: tuple[str, ...]) -> "Schema":
        shapes = dict(zip(self.names, self.shapes))
        return Schema(names, tuple(shapes[n] for n in names))

    def bitmap(self, names: tuple[str, ...]) -> bytes:
        present = set(names)
        return np.packbits(np.array([n in present for n in self.names], dtype=bool), bitorder="little").tobytes()

    def from_bitmap(self, bitmap: bytes) -> tuple[str, ...]:
        bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), count=len(self.names), bitorder="little")
        return tuple(n for n, b in zip(self.names, bits) if b)


class Codec:
    """Turns a dict of tensors into bytes and back. Subclasses set ``name`` and ``id`` and
    implement ``encode_body`` / ``decode_body`` over the flat float32 vector."""

    name: str = ""
    id: int = 0
    description: str = ""
    error_feedback: bool = False  # keep what was not sent on the client, add it next time

    def spec(self) -> str:
        return self.name

    def encode(self, tensors: dict[str, torch.Tensor], schema: Schema, memory: dict | None = None) -> bytes:
        """``tensors``: every tensor of ``schema``, or a subset (see the module doc).
        ``memory``: the client's codec state between rounds (error feedback residual, one
        per subset sent)."""
        names = tuple(n for n in schema.names if n in tensors)
        if len(names) != len(tensors):
            raise ValueError(f"cannot encode tensors outside the agreed schema: {sorted(set(tensors) - set(schema.names))[:3]}")
        subset = names != schema.names
        part = schema.subset(names) if subset else schema
        key = f"residual:{part.crc:08x}" if subset else "residual"
        flat = _flatten(tensors, part)
        if self.error_feedback and memory is not None and key in memory:
            flat = flat + memory[key]
        body, flags = self.encode_body(flat, part)
        if self.error_feedback and memory is not None:
            memory[key] = flat - self.decode_body(memoryview(body), part, flags)
        head = HEADER.pack(MAGIC, VERSION, self.id, flags | (SUBSET if subset else 0), schema.crc, part.numel)
        return head + (schema.bitmap(names) if subset else b"") + body

    def decode(self, payload: bytes, schema: Schema) -> dict[str, torch.Tensor]:
        """The tensors the payload carries: all of ``schema``'s, or the subset it names."""
        magic, version, codec_id, flags, crc, count = HEADER.unpack_from(payload)
        if magic != MAGIC or version != VERSION:
            raise ValueError("not a pflbench payload (bad magic or version)")
        if codec_id != self.id:
            raise ValueError(f"payload was encoded with codec id {codec_id}, not {self.name} ({self.id})")
        start, part = HEADER_BYTES, schema
        if flags & SUBSET:
            start += (len(schema) + 7) // 8
            part = schema.subset(schema.from_bitmap(payload[HEADER_BYTES:start]))
            flags &= ~SUBSET
        if crc != schema.crc or count != part.numel:
            raise ValueError("payload does not match the agreed tensor schema")
        flat = self.decode_body(memoryview(payload)[start:], part, flags)
        out, offset = {}, 0
        for name, shape in zip(part.names, part.shapes):
            n = int(np.prod(shape, dtype=np.int64))
            out[name] = flat[offset : offset + n].reshape(shape)
            offset += n
        return out

    def encode_body(self, flat: torch.Tensor, schema: Schema) -> tuple[bytes, int]:
        """-> (body, header flags)"""
        raise NotImplementedError

    def body_length(self, schema: Schema) -> int:
        """The length of ``encode_body``'s body for ``schema``, whatever the values: what the
        decoder checks a body against, and what ``payload_length`` adds up."""
        raise NotImplementedError

    def payload_length(self, schema: Schema) -> int:
        """The exact length of a full upload of ``schema`` (header and body): the bytes
        ``encode`` returns for any values, without holding them (``pflbench budget show``
        for payloads too large to encode here; tests check it against ``encode``)."""
        return HEADER_BYTES + self.body_length(schema)

    def decode_body(self, body: memoryview, schema: Schema, flags: int) -> torch.Tensor:
        raise NotImplementedError


def _flatten(tensors: dict[str, torch.Tensor], schema: Schema) -> torch.Tensor:
    if not len(schema):
        return torch.zeros(0)
    return torch.cat([tensors[n].detach().reshape(-1).float().cpu() for n in schema.names])


def _check_len(codec: str, body: memoryview, expected: int) -> None:
    if len(body) != expected:
        raise ValueError(f"{codec} body holds {len(body)} bytes, expected {expected}")


class FP32Codec(Codec):
    """Dense float32, little-endian: 4 bytes a value."""

    name, id = "fp32", 1
    description = "dense float32, 4 bytes per value"

    def encode_body(self, flat, schema):
        return flat.numpy().astype("<f4", copy=False).tobytes(), 0

    def body_length(self, schema):
        return 4 * schema.numel

    def decode_body(self, body, schema, flags):
        _check_len(self.name, body, self.body_length(schema))
        return torch.from_numpy(np.frombuffer(body, dtype="<f4").copy())


class FP16Codec(Codec):
    """Dense IEEE half precision: 2 bytes a value (values beyond +-65504 saturate)."""

    name, id = "fp16", 2
    description = "dense float16, 2 bytes per value"

    def encode_body(self, flat, schema):
        return flat.clamp(-65504, 65504).numpy().astype("<f2").tobytes(), 0

    def body_length(self, schema):
        return 2 * schema.numel

    def decode_body(self, body, schema, flags):
        _check_len(self.name, body, self.body_length(schema))
        return torch.from_numpy(np.frombuffer(body, dtype="<f2").astype(np.float32))


class BF16Codec(Codec):
    """Dense bfloat16 (float32 range, 8-bit mantissa): 2 bytes a value."""

    name, id = "bf16", 3
    description = "dense bfloat16, 2 bytes per value"

    def encode_body(self, flat, schema):
        return flat.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2", copy=False).tobytes(), 0

    def body_length(self, schema):
        return 2 * schema.numel

    def decode_body(self, body, schema, flags):
        _check_len(self.name, body, self.body_length(schema))
        raw = torch.from_numpy(np.frombuffer(body, dtype="<i2").copy())
        return raw.view(torch.bfloat16).float()


def _rows(schema: Schema) -> list[tuple[int, int, bool]]:
    """Per tensor, viewed as a matrix (-1, last dim): (rows, row length, transposed). The
    scale goes with the smaller side, so a tall matrix (LoRA's B: 96 x 8) gets one scale per
    column instead of one per short row."""
    out = []
    for shape in schema.shapes:
        width = shape[-1] if shape else 1
        n = int(np.prod(shape, dtype=np.int64))
        height = n // width if width else 0
        out.append((width, height, True) if height > width else (height, width, False))
    return out


class Int8Codec(Codec):
    """Symmetric int8 with one float32 scale per row: a row's values are round(x / s),
    s = max|x| / 127. Rows run along the matrix's longer side (see ``_rows``). Body: every
    scale, then every int8 value."""

    name, id = "int8", 4
    description = "int8 with a float32 scale per row, ~1 byte per value"

    def encode_body(self, flat, schema):
        scales, values, offset = [], [], 0
        for rows, width, transposed in _rows(schema):
            n = rows * width
            block = flat[offset : offset + n].reshape((width, rows) if transposed else (rows, width))
            block = block.t() if transposed else block
            offset += n
            s = block.abs().amax(dim=1) / 127.0
            s = torch.where(s > 0, s, torch.ones_like(s))
            scales.append(s)
            values.append(torch.round(block / s[:, None]).clamp(-127, 127).to(torch.int8).reshape(-1))
        s_all = torch.cat(scales) if scales else torch.zeros(0)
        v_all = torch.cat(values) if values else torch.zeros(0, dtype=torch.int8)
        return s_all.numpy().astype("<f4").tobytes() + v_all.numpy().tobytes(), 0

    def body_length(self, schema):
        return 4 * sum(r for r, _, _ in _rows(schema)) + schema.numel

    def decode_body(self, body, schema, flags):
        layout = _rows(schema)
        n_rows = sum(r for r, _, _ in layout)
        _check_len(self.name, body, self.body_length(schema))
        scales = torch.from_numpy(np.frombuffer(body[: 4 * n_rows], dtype="<f4").copy())
        values = torch.from_numpy(np.frombuffer(body[4 * n_rows :], dtype=np.int8).astype(np.float32))
        out, r0, v0 = [], 0, 0
        for rows, width, transposed in layout:
            block = values[v0 : v0 + rows * width].reshape(rows, width) * scales[r0 : r0 + rows, None]
            out.append((block.t() if transposed else block).reshape(-1))
            r0, v0 = r0 + rows, v0 + rows * width
        return torch.cat(out) if out else torch.zeros(0)


class TopKCodec(Codec):
    """Keep the fraction F of values largest in magnitude (at least one), with error
    feedback: what was not sent stays in the client's residual and is added next round.
    Body: k (uint32), the k values (float32), then their positions as uint32 indices or as a
    bitmap of numel bits, whichever is smaller (header flag 1 = bitmap)."""

    id = 5
    error_feedback = True
    description = "top-k sparsification (fraction F) with error feedback, values + indices or bitmap"

    def __init__(self, fraction: float):
        self.fraction = fraction
        self.name = f"topk:{fraction:g}"

    def _k(self, n: int) -> int:
        return min(n, max(1, math.ceil(self.fraction * n))) if n else 0

    def _bitmap(self, n: int, k: int) -> bool:
        """Positions as a bitmap (header flag 1) when it is smaller than k indices."""
        return (n + 7) // 8 < 4 * k

    def body_length(self, schema):
        n = schema.numel
        k = self._k(n)
        return 4 + 4 * k + ((n + 7) // 8 if self._bitmap(n, k) else 4 * k)

    def encode_body(self, flat, schema):
        n = flat.numel()
        k = self._k(n)
        idx = torch.topk(flat.abs(), k, sorted=False).indices.sort().values if k else torch.zeros(0, dtype=torch.long)
        values = flat[idx].numpy().astype("<f4").tobytes()
        if self._bitmap(n, k):
            mask = np.zeros(n, dtype=bool)
            mask[idx.numpy()] = True
            return struct.pack("<I", k) + values + np.packbits(mask, bitorder="little").tobytes(), 1
        return struct.pack("<I", k) + values + idx.numpy().astype("<u4").tobytes(), 0

    def decode_body(self, body, schema, flags):
        n = schema.numel
        (k,) = struct.unpack_from("<I", body)
        values = np.frombuffer(body[4 : 4 + 4 * k], dtype="<f4")
        rest = body[4 + 4 * k :]
        if flags & 1:
            _check_len(self.name, rest, (n + 7) // 8)
            idx = np.flatnonzero(np.unpackbits(np.frombuffer(rest, dtype=np.uint8), count=n, bitorder="little"))
        else:
            _check_len(self.name, rest, 4 * k)
            idx = np.frombuffer(rest, dtype="<u4").astype(np.int64)
        out = torch.zeros(n)
        out[torch.from_numpy(idx)] = torch.from_numpy(values.copy())
        return out


CODECS: dict[str, type[Codec]] = {c.name: c for c in (FP32Codec, FP16Codec, BF16Codec, Int8Codec)}
CODEC_CHOICES = (*CODECS, "topk:F")


def make_codec(name: str) -> Codec:
    if name in CODECS:
        return CODECS[name]()
    if name.startswith("topk:"):
        try:
            fraction = float(name.split(":", 1)[1])
        except ValueError:
            fraction = -1.0
        if not 0 < fraction <= 1:
            raise UserError(f"codec {name!r}: the top-k fraction must be in (0, 1], e.g. topk:0.1")
        return TopKCodec(fraction)
    raise UserError(f"unknown codec {name!r}; choose one of: {', '.join(CODEC_CHOICES)}")
