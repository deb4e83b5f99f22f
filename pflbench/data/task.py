"""A Task turns a card into clients (train and test examples) and scores a model on them."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from pflbench.errors import UserError

TASK_SEED_TAG = 0x7A5C  # mixes the run seed into the partition's generator


@dataclass
class ClientData:
    id: int
    name: str  # e.g. "tempest/PROSPERO"
    train: list[list[int]]  # token ids
    test: list[list[int]]


@dataclass
class Task:
    """A loaded task card. ``records`` yields the source's rows (dicts)."""

    name: str
    kind: str
    description: str
    metric: str
    source: dict[str, Any]
    records: Callable[[], list[dict[str, Any]]]
    text: str  # template over a record's fields, e.g. "{text}"
    partition: dict[str, Any]
    test_fraction: float = 0.2
    min_examples: int = 20
    max_train_examples: int = 200
    max_test_examples: int = 50
    max_length: int = 64
    origin: str = ""  # the card file
    _pad_id: int = field(default=0, repr=False)

    # ---- clients -------------------------------------------------------------------
    def clients(self, tokenizer, n: int, seed: int) -> list[ClientData]:
        from pflbench.data.partition import partition

        groups = partition(self, self.records(), n, seed)
        self._pad_id = tokenizer.pad_token_id
        out = []
        for cid, (name, rows) in enumerate(groups):
            ids = [self.encode(tokenizer, row) for row in rows]
            # a random held-out split per client (as in LEAF), fixed by the seed and the client
            order = seeded_rng(seed, TASK_SEED_TAG, zlib.crc32(name.encode())).permutation(len(ids))
            n_test = max(1, int(round(len(ids) * self.test_fraction)))
            test = [ids[i] for i in sorted(order[:n_test])][: self.max_test_examples]
            train = [ids[i] for i in sorted(order[n_test:])][: self.max_train_examples]
            out.append(ClientData(cid, name, train, test))
        return out

    def encode(self, tokenizer, row: dict[str, Any]) -> list[int]:
        try:
            text = self.text.format(**row)
        except KeyError as exc:
            raise UserError(f"task {self.name}: template field {exc} is not in the source's records") from None
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        return ids[: self.max_length]

    # ---- training --------------------------------------------------------------------
    def num_train(self, client: ClientData) -> int:
        return len(client.train)

    def train_batch(self, client: ClientData, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(client.train), (batch_size,), generator=generator).tolist()
        return lm_batch([client.train[i] for i in idx], self._pad_id)

    # ---- scoring ---------------------------------------------------------------------
    def score(self, model, client: ClientData) -> float:
        from pflbench.evaluation.metrics import METRICS

        return METRICS[self.metric](model, client.test, self._pad_id)


def lm_batch(examples: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded causal-LM batch; padding is masked out of attention and loss."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def seeded_rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, *tags])
