"""Pairwise-masked secure aggregation (Bonawitz et al., CCS 2017), simulated byte for byte
(``--secagg``): the server learns the weighted sum of the round's delivered uploads, never one
upload.

A round with the sampled clients U (semi-honest server, dropouts tolerated):

1. **Advertise keys.** Each client makes two X25519 key pairs (``c`` to encrypt its shares,
   ``s`` to agree masks) and uploads the two public keys; the server broadcasts every
   client's keys to every client.
2. **Share keys.** Each client draws a self-mask seed ``b``, splits ``b`` and its ``s``
   private key into ``t``-of-``|U|`` Shamir shares (a prime field of 521 bits, so a 32-byte
   secret fits), and sends each other client its two shares encrypted with AES-GCM under a key
   agreed from the ``c`` keys (routed by the server).
3. **Masked input.** Each client scales its upload by its weight (its examples over the
   round's total, which the server broadcasts), encodes it in fixed point (2^24 units in the
   ring of 32-bit integers: the width of the fp32 codec), and adds its self mask PRG(b) and,
   for every other client v, +PRG(s_uv) if u < v else -PRG(s_uv), s_uv agreed from the ``s``
   keys. The client does this on the device (``Setup.mask``, where its upload would be
   encoded: ``federation.client.outgoing``), so what leaves it, over a Flower wire too, is the masked
   vector; it goes over the channel like any upload, and the channel may lose it.
4. **Unmask.** The survivors (delivered uploads) send the server, for every sampled client
   (themselves included), the share they hold: of ``b`` for a survivor, of ``s`` for a dropped client. With
   at least ``t`` survivors the server rebuilds the self masks of the survivors and the
   pairwise masks of the dropped clients, and removes them: what is left is the sum of the
   survivors' scaled uploads. Fewer than ``t``: the round's aggregate is lost.

The simulation plays phases 1, 2 and 4 in one place (``SecAgg``), each party's keys derived
from the run's seed, the round and the client (``_secrets``); phase 3 runs on each client,
which derives its own secrets the same way and gets only the public ``Setup`` with its job.

Every message is made with the ``cryptography`` package's primitives and counted from its
bytes: keys, ciphertexts and shares on the uplink with the masked payload, the key broadcast
and the routed ciphertexts on the downlink. The masked payload crosses the channel; the key and
share messages are small control traffic, counted but not put through the channel's losses.
The masks are drawn from numpy's PCG64 seeded by SHA-256 of the agreed secret (the paper's PRG
is AES in counter mode; the cancellation is the same). The method's ``aggregate`` gets one
update, the weighted mean of the survivors, as under over-the-air aggregation.

Composes with: every method (they aggregate a weighted mean), the fp32 codec, digital channels,
local DP (noise is added before masking). Refused in one line: other codecs (top-k sends a
different subset per client, so masks cannot cancel; int8, fp16 and bf16 would need their own
ring), over-the-air channels (they superpose analog signals already), central DP (the server
cannot clip uploads it cannot see).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pflbench.errors import UserError

SCALE = 2**24  # fixed-point units per 1.0: |value| below 128 fits a signed 32-bit ring
LIMIT = 2**31 / SCALE
PRIME = 2**521 - 1  # Shamir's field: a Mersenne prime above any 32-byte secret
SHARE_BYTES = 2 + 66  # x (uint16) + y (521 bits in 66 bytes)
KEY_BYTES = 32  # an X25519 public key
ID_BYTES = 4  # a client id on the wire
GCM_OVERHEAD = 12 + 16  # AES-GCM nonce and tag
# one routed ciphertext: sender, recipient, and the encrypted pair of shares (of s and b)
CIPHERTEXT_BYTES = 2 * ID_BYTES + GCM_OVERHEAD + 2 * ID_BYTES + 2 * SHARE_BYTES
MASKED_HEADER = 8  # round and client ids in front of a masked vector
SECAGG_TAG = 0x5EC  # keeps the protocol's draws apart from every other draw of the seed


def check(spec, channel) -> None:
    """Refuse the combinations whose masks could not cancel, in one line."""
    if not spec.secagg:
        return
    if spec.codec != "fp32":
        raise UserError(f"--secagg sums masked vectors in the 32-bit ring of the fp32 codec; --codec {spec.codec} "
                        f"does not compose (top-k sends a different subset per client; int8, fp16 and bf16 would need "
                        f"their own ring): use --codec fp32")
    if getattr(channel, "superposes", False):
        raise UserError(f"--secagg does not compose with over-the-air aggregation ({spec.channel}): the channel "
                        f"already superposes the clients' analog signals")
    if spec.dp and spec.dp.get("mode") == "central":
        raise UserError("--secagg hides each upload from the server, which central DP must clip: use --dp mode=local")


def _rng_bytes(seed: int, round_idx: int, *ids: int) -> bytes:
    state = np.random.SeedSequence([seed, round_idx, SECAGG_TAG, *ids]).generate_state(8, dtype=np.uint32)
    return state.tobytes()


def _prg(secret: bytes, n: int) -> np.ndarray:
    """n uint32 mask words from a 32-byte secret."""
    seed = int.from_bytes(hashlib.sha256(secret).digest(), "little")
    return np.random.Generator(np.random.PCG64(seed)).integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)


def shamir_split(secret: bytes, n: int, t: int, rng_bytes: bytes) -> list[tuple[int, int]]:
    """``n`` shares (x = 1..n) of ``secret``, any ``t`` of which rebuild it."""
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(hashlib.sha256(rng_bytes).digest(), "little")))
    coeffs = [int.from_bytes(secret, "little")] + [int.from_bytes(rng.bytes(65), "little") % PRIME for _ in range(t - 1)]
    return [(x, sum(c * pow(x, k, PRIME) for k, c in enumerate(coeffs)) % PRIME) for x in range(1, n + 1)]


def shamir_join(shares: list[tuple[int, int]], length: int = 32) -> bytes:
    """The secret from at least t shares (Lagrange at 0)."""
    total = 0
    for i, (xi, yi) in enumerate(shares):
        num, den = 1, 1
        for j, (xj, _) in enumerate(shares):
            if i != j:
                num, den = num * (-xj) % PRIME, den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total.to_bytes(length, "little")


def _share_bytes(share: tuple[int, int]) -> bytes:
    return struct.pack("<H", share[0]) + share[1].to_bytes(66, "little")


@dataclass
class Party:
    client: int
    c_key: Any  # X25519PrivateKey (encryption)
    s_key: Any  # X25519PrivateKey (mask agreement)
    b_seed: bytes  # the self-mask seed
    held: dict[int, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)  # from v: (share of s_v, of b_v)


@dataclass
class RoundResult:
    """The server's view after a round: the survivors' weighted mean (None: aborted) and the
    bytes each phase took."""

    delta: dict[str, torch.Tensor] | None
    messages: dict[str, torch.Tensor] | None
    weight: float
    survivors: list[int]
    dropped: list[int]
    uplink: dict[int, int]  # client -> protocol bytes it uploaded (keys, ciphertexts, shares)
    downlink: int  # protocol bytes the server sent (key broadcast, routed ciphertexts)


def _secrets(seed: int, round_idx: int, client: int):
    """A client's two X25519 private keys (``c`` to encrypt its shares, ``s`` to agree masks)
    and its self-mask seed ``b`` for a round. A device would draw them from its own randomness;
    the simulation derives them from the run's seed, so a run is reproducible and a client (on a
    Flower node too) makes its own without receiving them."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return (X25519PrivateKey.from_private_bytes(_rng_bytes(seed, round_idx, client, 1)),
            X25519PrivateKey.from_private_bytes(_rng_bytes(seed, round_idx, client, 2)),
            _rng_bytes(seed, round_idx, client, 3))


@dataclass
class Setup:
    """What one client learns from the server before it uploads, the public part of phases 1-2:
    the round, the sampled clients, their ``s`` public keys and its own weight (its examples
    over the round's total). With its own secrets (``_secrets``) it is all the client needs to
    mask its upload on the device (``mask``). Plain numbers and bytes, so it travels with a
    ``ClientJob`` to a Ray worker or, as ``to_bytes``, in a Flower message."""

    round: int
    client: int
    clients: list[int]
    weight: float
    s_public: dict[int, bytes]

    def mask(self, upload: dict[str, torch.Tensor], seed: int, names: list[str], shapes: list[tuple]) -> bytes:
        """The masked vector this client sends: its upload (every name of the schema, in order,
        zeros where it carries none) scaled by its weight, in fixed point, plus its self mask
        and its pairwise masks; 4 bytes a value and a header."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        full = [upload[n] if n in upload else torch.zeros(shape) for n, shape in zip(names, shapes)]
        flat = torch.cat([t.detach().double().flatten().cpu() for t in full]) * self.weight
        if flat.numel() and float(flat.abs().max()) >= LIMIT:
            raise UserError(f"--secagg: a weighted upload value of {float(flat.abs().max()):.3g} is beyond the "
                            f"fixed-point ring's +-{LIMIT:g}; clip the uploads (--dp clip=...) or lower --lr")
        numel = flat.numel()
        _, s_key, b_seed = _secrets(seed, self.round, self.client)
        words = np.round(flat.numpy() * SCALE).astype(np.int64).astype(np.uint32) + _prg(b_seed, numel)
        for v in self.clients:
            if v != self.client:
                pair = _prg(s_key.exchange(X25519PublicKey.from_public_bytes(self.s_public[v])), numel)
                words = words + pair if self.client < v else words - pair
        return struct.pack("<II", self.round, self.client) + words.astype("<u4").tobytes()

    def to_bytes(self) -> bytes:
        return json.dumps({"round": self.round, "client": self.client, "clients": self.clients, "weight": self.weight,
                           "s_public": {str(c): k.hex() for c, k in self.s_public.items()}}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Setup":
        d = json.loads(raw)
        return cls(round=d["round"], client=d["client"], clients=d["clients"], weight=d["weight"],
                   s_public={int(c): bytes.fromhex(k) for c, k in d["s_public"].items()})


class SecAgg:
    """One round of the protocol over the sampled clients; ``setup`` is what each client masks
    its upload with (``Setup.mask``), ``unmask`` what the server recovers from the delivered ones."""

    def __init__(self, clients: list[int], weights: dict[int, float], names: list[str], shapes: list[tuple],
                 seed: int, round_idx: int):
        from cryptography.hazmat.primitives import serialization

        self.clients, self.names, self.shapes = list(clients), names, shapes
        self.numel = int(sum(int(np.prod(s)) for s in shapes))
        self.seed, self.round = seed, round_idx
        total = sum(weights[c] for c in clients)
        self.weight = {c: weights[c] / total for c in clients}  # what each client scales by (broadcast)
        self.t = len(clients) // 2 + 1  # a majority rebuilds a secret
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        self.parties = {c: Party(c, *_secrets(seed, round_idx, c)) for c in clients}
        self.public = {c: (p.c_key.public_key().public_bytes(*raw), p.s_key.public_key().public_bytes(*raw))
                       for c, p in self.parties.items()}
        self.uplink = {c: 2 * KEY_BYTES for c in clients}  # 1. advertise keys
        self.downlink = len(clients) * len(clients) * (ID_BYTES + 2 * KEY_BYTES)  # the key list, to every client
        self._share_keys()

    # ---- 2. share keys ----------------------------------------------------------------
    def _share_keys(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        n, index = len(self.clients), {c: i + 1 for i, c in enumerate(self.clients)}
        for u in self.clients:
            p = self.parties[u]
            s_raw = p.s_key.private_bytes_raw()
            s_shares = shamir_split(s_raw, n, self.t, _rng_bytes(self.seed, self.round, u, 4))
            b_shares = shamir_split(p.b_seed, n, self.t, _rng_bytes(self.seed, self.round, u, 5))
            p.held[u] = (s_shares[index[u] - 1], b_shares[index[u] - 1])  # its own share stays with it
            for v in self.clients:
                if v == u:
                    continue
                key = hashlib.sha256(p.c_key.exchange(X25519PublicKey.from_public_bytes(self.public[v][0]))).digest()
                plain = struct.pack("<II", u, v) + _share_bytes(s_shares[index[v] - 1]) + _share_bytes(b_shares[index[v] - 1])
                nonce = _rng_bytes(self.seed, self.round, u, v, 6)[:12]
                sealed = nonce + AESGCM(key).encrypt(nonce, plain, None)
                message = struct.pack("<II", u, v) + sealed
                assert len(message) == CIPHERTEXT_BYTES
                self.uplink[u] += len(message)
                self.downlink += len(message)  # routed to v
                self.parties[v].held[u] = (s_shares[index[v] - 1], b_shares[index[v] - 1])

    # ---- 3. masked input (on the client) -------------------------------------------
    def setup(self, client: int) -> Setup:
        """What the server tells ``client`` before it uploads (``Setup``); it masks its upload
        with that and its own secrets."""
        return Setup(round=self.round, client=client, clients=list(self.clients), weight=self.weight[client],
                     s_public={c: self.public[c][1] for c in self.clients})

    # ---- 4. unmask ---------------------------------------------------------------------
    def unmask(self, delivered: dict[int, bytes], message_names: set[str]) -> RoundResult:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

        survivors = [c for c in self.clients if c in delivered]
        dropped = [c for c in self.clients if c not in delivered]
        uplink = dict(self.uplink)
        for u in survivors:  # each survivor's share for every sampled client (its own included)
            uplink[u] += len(self.clients) * (ID_BYTES + SHARE_BYTES)
        weight = sum(self.weight[c] for c in survivors)
        if len(survivors) < self.t:
            return RoundResult(None, None, weight, survivors, dropped, uplink, self.downlink)
        total = np.zeros(self.numel, dtype=np.uint32)
        for c in survivors:
            total = total + np.frombuffer(delivered[c], dtype="<u4", offset=MASKED_HEADER)
        for u in survivors:  # rebuild and remove the survivors' self masks
            b = shamir_join([self.parties[v].held[u][1] for v in survivors][: self.t])
            total = total - _prg(b, self.numel)
        for d in dropped:  # rebuild the dropped clients' s keys and remove their pairwise masks
            rebuilt = X25519PrivateKey.from_private_bytes(shamir_join([self.parties[v].held[d][0] for v in survivors][: self.t]))
            for u in survivors:
                pair = _prg(rebuilt.exchange(X25519PublicKey.from_public_bytes(self.public[u][1])), self.numel)
                total = total - pair if u < d else total + pair  # u added +pair (u < d) or -pair (u > d)
        values = torch.from_numpy(total.astype(np.int32).astype(np.float64) / SCALE / weight)
        out, at = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = int(np.prod(shape))
            out[name] = values[at:at + k].reshape(shape).float()
            at += k
        delta = {n: t for n, t in out.items() if n not in message_names}
        return RoundResult(delta, {n: t for n, t in out.items() if n in message_names}, weight, survivors, dropped,
                           uplink, self.downlink)


def protocol_bytes(k: int, survived: bool = True) -> int:
    """One client's protocol uplink in a round of ``k`` sampled clients, the masked payload
    apart: two public keys, k-1 routed ciphertexts and, for a survivor, k shares (one for each
    sampled client, itself included)."""
    return 2 * KEY_BYTES + (k - 1) * CIPHERTEXT_BYTES + (k * (ID_BYTES + SHARE_BYTES) if survived else 0)
