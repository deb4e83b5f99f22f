"""The communication budget: uplink bytes per client-round of each method under each codec,
measured from encoded payloads, against a budget file (``pflbench budget check`` / ``update``).

A budget file is JSON::

    {"model": "tiny", "uplink_bytes_per_client_round": {"METHOD": {"CODEC": BYTES, ...}, ...}}

A measurement is one round of one client taking one local step (batch 2) on ``model``: the
round's ``uplink_bytes``, the summed length of the payloads produced. Any rise is a regression;
a fall is a change to record (``update``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pflbench import registry
from pflbench.errors import UserError
from pflbench.federation.engine import payload_bytes
from pflbench.results.record import atomic_write
from pflbench.yamlcards import MAX_CARD_BYTES, NotRegularFile, TooLarge, read_bounded

DEFAULT_CODECS = ("fp32", "fp16", "int8", "topk:0.1")
KEY = "uplink_bytes_per_client_round"
ABOUT = ("Uplink bytes per client-round (one client, one local step), measured from the encoded payloads by "
         "`pflbench budget update`; `pflbench budget check` fails when any figure rises.")


def measure(method: str, codec: str, model: str = "tiny") -> int:
    """Uplink bytes of one client-round of ``method`` under ``codec`` on ``model``."""

    return payload_bytes(method, model, codec)


# a payload of more values than this is not encoded here (its zeros alone would take 4 bytes a
# value); its length comes from the codec's length rule, which the decoder checks every body against
ENCODE_LIMIT = 1 << 26


@dataclass(frozen=True)
class MetaPayload:
    """One client-round's payloads of ``method`` on ``model``'s architecture, weights unread."""

    model: str
    architecture: str  # where the config came from
    method: str
    codec: str
    base_parameters: int  # the architecture's own
    parameters: int  # with the method's adapters attached
    shared_parameters: int  # values in the shared tensors (what FedAvg would average)
    uplink_bytes: int  # one client's upload in one round
    downlink_bytes: int  # what the server sends one sampled client in one round (fp32)
    encoded: bool  # both counted by encoding zeros of the real shapes (else by the codec's length rule)

    def totals(self, rounds: int, clients_per_round: int) -> dict[str, int]:
        """Over a run in which every sampled client uploads every round (what a run counts: the
        payloads produced, delivered or not)."""
        n = rounds * clients_per_round
        return {"uplink_bytes": self.uplink_bytes * n, "downlink_bytes": self.downlink_bytes * n,
                "total_bytes": (self.uplink_bytes + self.downlink_bytes) * n}


def meta_payload(model: str, method: str, codec: str = "fp32", options: dict[str, str] | None = None) -> MetaPayload:
    """Build ``model``'s architecture on PyTorch's meta device (no memory, no weights), attach
    ``method``'s adapters with its ``prepare``, and encode one upload (every shared tensor and
    every message the method declares) with ``codec`` and one broadcast (``Method.broadcast``)
    with fp32, as a run does, from zeros of the real shapes: the bytes are the encoder's. A
    payload above ``ENCODE_LIMIT`` values is counted by the codec's ``payload_length``."""
    import torch
    from transformers import AutoModelForCausalLM

    from pflbench.federation.client import upload_schema
    from pflbench.federation.codec import FP32Codec, Schema, make_codec
    from pflbench.models import architecture

    up_codec = make_codec(codec)
    m = registry.methods.get(method)(options or {})
    config, where = architecture(model, "budget show")
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config)
        base = sum(p.numel() for p in net.parameters())
        parts = m.prepare(net)
    params = dict(net.named_parameters())
    upload = upload_schema(net, parts)  # what a run's uploads are encoded against
    broadcast = Schema.of(m.broadcast({n: params[n] for n in parts.shared}))
    if not m.federated:
        upload = Schema((), ())
    encoded = max(upload.numel, broadcast.numel) <= ENCODE_LIMIT

    def length(codec_, schema: Schema) -> int:
        if not len(schema):
            return 0  # nothing to send: no payload at all, not an empty one
        n = codec_.payload_length(schema)
        if encoded:
            zeros = {name: torch.zeros(shape) for name, shape in zip(schema.names, schema.shapes)}
            sent = len(codec_.encode(zeros, schema))
            if sent != n:
                raise AssertionError(f"{codec_.name}: encoded {sent} bytes, its length rule says {n}")  # a bug in the codec
        return n

    return MetaPayload(model=model, architecture=where, method=method, codec=up_codec.spec(), base_parameters=base,
                       parameters=sum(p.numel() for p in params.values()),
                       shared_parameters=sum(params[n].numel() for n in parts.shared),
                       uplink_bytes=length(up_codec, upload), downlink_bytes=length(FP32Codec(), broadcast), encoded=encoded)


def read(path: Path) -> dict:
    """The budget file: ``{KEY: {METHOD: {CODEC: BYTES}}}`` with every figure a non-negative
    integer and at least one figure; anything else is one line."""

    path = Path(path)
    try:
        if path.is_dir():
            raise UserError(f"budget file {path} is a folder; name a .json file")
        raw = read_bounded(path, MAX_CARD_BYTES)
        data = json.loads(raw.decode("utf-8"))  # NaN parses as a float, refused with the figures below
    except NotRegularFile as exc:
        raise UserError(f"budget file {path} is {exc}") from None
    except TooLarge as exc:
        raise UserError(f"budget file {path} is {exc}: not a budget") from None
    except FileNotFoundError:
        raise UserError(f"no budget file {path}; write one with `pflbench budget update --budget {path}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"budget file {path} is not JSON: {exc}") from None
    except OSError as exc:
        raise UserError(f"budget file {path} cannot be read: {exc.strerror or exc}") from None
    table = data.get(KEY) if isinstance(data, dict) else None
    shape = f"expected {{\"{KEY}\": {{METHOD: {{CODEC: BYTES}}}}}}"
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise UserError(f"budget file {path}: {shape}")
    for method, row in table.items():
        for codec, figure in row.items():
            if isinstance(figure, bool) or not isinstance(figure, int) or figure < 0:
                raise UserError(f"budget file {path}: {method} / {codec} is {figure!r}; a budget is a non-negative whole number of bytes")
    if not any(table.values()):
        raise UserError(f"budget file {path} holds no figures: a check against it would pass without checking anything")
    return data


def write(path: Path, data: dict) -> None:
    """One line per method, so a diff shows which method changed."""
    table = dict(sorted(data[KEY].items()))
    head = {k: v for k, v in data.items() if k != KEY}
    lines = ",\n".join(f"    {json.dumps(m)}: {json.dumps(v)}" for m, v in table.items())
    text = json.dumps(head, indent=2)[:-2] + (",\n" if head else "") + f'  "{KEY}": {{\n{lines}\n  }}\n}}\n'

    try:
        atomic_write(Path(path), text)  # the old budget stays whole if this fails (a full disk, a folder in its place)
    except OSError as exc:
        raise UserError(f"cannot write the budget file {path}: {exc.strerror or exc}; it is unchanged") from None


@dataclass(frozen=True)
class Line:
    method: str
    codec: str
    budget: int | None  # None: not in the budget file
    measured: int

    @property
    def verdict(self) -> str:
        if self.budget is None:
            return "new"
        return "ok" if self.measured == self.budget else ("ROSE" if self.measured > self.budget else "fell")

    @property
    def ratio(self) -> float | None:
        if self.budget is None:
            return None
        return self.measured / self.budget if self.budget else (1.0 if self.measured == 0 else float("inf"))


def compare(data: dict, methods: list[str] | None, codecs: list[str] | None, progress=None) -> list[Line]:
    """Measure ``methods`` (default: every method in the budget) under ``codecs`` (default: the
    budget's codecs for that method, or the standard ones)."""

    table = data[KEY]
    known = registry.methods.names()
    chosen = methods or list(table)
    missing = [m for m in chosen if m not in known]
    if missing:
        raise UserError(f"method {missing[0]!r} is not installed; installed: {', '.join(known)}")
    lines = []
    for m in chosen:
        for c in codecs or list(table.get(m) or DEFAULT_CODECS):
            if progress:
                progress(f"{m} / {c}")
            lines.append(Line(m, c, table.get(m, {}).get(c), measure(m, c, data.get("model", "tiny"))))
    return lines


def updated(data: dict, lines: list[Line]) -> dict:
    table = {m: dict(v) for m, v in data[KEY].items()}
    for line in lines:
        table.setdefault(line.method, {})[line.codec] = line.measured
    return {**data, KEY: table}
