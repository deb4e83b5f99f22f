"""A Task turns a card into clients (train and test examples) and scores a model on them.

Examples are token ids with a prompt length: training loss and next-token metrics cover
the tokens after the prompt (all of them for plain text tasks). Generation metrics decode
greedily from the prompt and compare with the reference text.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pflbench.data.mixture import client_weights
from pflbench.data.partition import partition
from pflbench.data.preprocess import PREPROCESSORS
from pflbench.data.sources import load_records
from pflbench.errors import UserError

TASK_SEED_TAG = 0x7A5C  # mixes the run seed into per-client split generators


@dataclass
class Example:
    ids: list[int]  # prompt + answer (+ end of sequence)
    prompt_len: int = 0  # loss and next-token metrics start here
    reference: str = ""  # the answer's text (generation metrics)
    label: int | None = None  # index into the card's labels (label accuracy)
    rejected: list[int] | None = None  # preference tasks: prompt + rejected answer
    meta: dict[str, Any] = field(default_factory=dict, repr=False)  # the source record (metrics may read its fields)

    @property
    def prompt(self) -> list[int]:
        return self.ids[: self.prompt_len]


@dataclass
class ClientData:
    id: int
    name: str  # e.g. "tempest/PROSPERO"
    train: list[Example]
    test: list[Example]
    weights: dict[str, float] | None = None  # reward tasks: the client's mixture over the card's reward roles


@dataclass
class Task:
    """A loaded task card (see docs/tasks.md)."""

    name: str
    kind: str
    description: str
    metric: str
    source: dict[str, Any]
    partition: dict[str, Any]
    text: str | None = None  # plain-text template (language modelling)
    prompt: str | None = None  # instruction template ...
    reference: str | None = None  # ... and its reference answer
    rejected: str | None = None  # preference tasks: the rejected answer
    fields: dict[str, str] = field(default_factory=dict)  # canonical name -> source column
    labels: list[str] | None = None
    label_field: str = "label"
    defaults: dict[str, Any] = field(default_factory=dict)  # the recommended budget (docs/tasks.md, "Card format")
    split_field: str | None = None  # a field whose value (train / test) fixes each record's split
    preprocess: str | None = None
    test_fraction: float = 0.2
    min_examples: int = 20
    max_train_examples: int = 200
    max_test_examples: int = 50
    max_length: int = 64
    max_new_tokens: int = 24
    # reward tasks (kind reward): reward models by role, each client's mixture over them,
    # which records conflict (refusal rate), and the sampling of the RL update
    rewards: dict[str, str] = field(default_factory=dict)
    mixture: dict[str, Any] = field(default_factory=dict)
    conflict_field: str | None = None
    temperature: float = 1.0
    group_size: int = 4
    origin: str = ""  # the card file
    identity: str = ""  # a card read from a path: NAME@HASH of its content and data (cards.card_identity)
    _pad_id: int = field(default=0, repr=False)
    _eos_id: int = field(default=0, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _mixture: Any = field(default=None, repr=False)

    # ---- records ----------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        rows = load_records(self.name, self.source, Path(self.origin).parent if self.origin else None)
        if self.preprocess:
            rows = PREPROCESSORS[self.preprocess](rows)
        if self.fields:
            missing = [c for c in self.fields.values() if rows and c not in rows[0]]
            if missing:
                raise UserError(f"task {self.name}: field(s) {', '.join(missing)} are not in the source's records")
            rows = [{**r, **{k: r[c] for k, c in self.fields.items()}} for r in rows]
        if self.labels:
            rows = [self._with_label(r) for r in rows]
        return rows

    def _with_label(self, row: dict[str, Any]) -> dict[str, Any]:
        value = row.get(self.label_field)
        if isinstance(value, (int, np.integer)) and 0 <= value < len(self.labels):
            index = int(value)
        elif str(value) in self.labels:
            index = self.labels.index(str(value))
        else:
            raise UserError(f"task {self.name}: label {value!r} is not one of {self.labels}")
        return {**row, "label_index": index, "label_name": self.labels[index]}

    # ---- clients ----------------------------------------------------------------------
    def clients(self, tokenizer, n: int, seed: int) -> list[ClientData]:
        self._tokenizer, self._pad_id, self._eos_id = tokenizer, tokenizer.pad_token_id, tokenizer.eos_token_id
        groups = partition(self, self.records(), n, seed)
        out = []
        for cid, (name, rows) in enumerate(groups):
            examples = [self.encode(tokenizer, row) for row in rows]
            if self.split_field is not None:  # the source fixes the split
                test = [e for e, r in zip(examples, rows) if r[self.split_field] == "test"]
                train = [e for e, r in zip(examples, rows) if r[self.split_field] != "test"]
            else:  # a random held-out split per client (as in LEAF), fixed by the seed and the client
                order = np.random.default_rng([seed, TASK_SEED_TAG, zlib.crc32(name.encode())]).permutation(len(examples))
                n_test = max(1, int(round(len(examples) * self.test_fraction)))
                test = [examples[i] for i in sorted(order[:n_test])]
                train = [examples[i] for i in sorted(order[n_test:])]
            if not train or not test:
                raise UserError(f"task {self.name}: client {name} has no {'training' if not train else 'test'} examples")
            weights = self.client_weights(name, rows, seed) if self.kind == "reward" else None
            out.append(ClientData(cid, name, train[: self.max_train_examples], test[: self.max_test_examples], weights))
        return out

    # ---- reward tasks ------------------------------------------------------------------
    def client_weights(self, name: str, rows: list[dict[str, Any]], seed: int) -> dict[str, float]:
        return client_weights(self.mixture, list(self.rewards), name, rows, seed)

    def prompt_text(self, example: Example) -> str:
        """The prompt as the reward models read it."""
        return self._fill(self.prompt, example.meta)

    def train_prompts(self, client: ClientData, batch_size: int, generator: torch.Generator) -> list[Example]:
        idx = torch.randint(0, len(client.train), (batch_size,), generator=generator).tolist()
        return [client.train[i] for i in idx]

    def _fill(self, template: str, row: dict[str, Any]) -> str:
        try:
            return template.format(**row)
        except KeyError as exc:
            raise UserError(f"task {self.name}: template field {exc} is not in the source's records") from None
        except (IndexError, TypeError, AttributeError, ValueError) as exc:
            raise UserError(f"task {self.name}: template {template!r} does not fit the records: {exc}") from None

    def render(self, row: dict[str, Any]) -> dict[str, str]:
        """The texts a run makes of ``row``: ``text``; or ``prompt``, ``reference`` (on a reward
        card only where the record has its fields: it is for diagnostics) and ``rejected``. A
        template that does not fit the records is one UserError (``task show`` checks this)."""
        if self.text is not None:
            return {"text": self._fill(self.text, row)}
        out = {"prompt": self._fill(self.prompt, row)}
        if self.kind == "reward":
            out["reference"] = self._fill(self.reference, row) if self.reference and _has_fields(self.reference, row) else ""
            return out
        out["reference"] = self._fill(self.reference, row)
        if self.rejected is not None:
            out["rejected"] = self._fill(self.rejected, row)
        return out

    def encode(self, tokenizer, row: dict[str, Any]) -> Example:
        eos = [tokenizer.eos_token_id]
        texts = self.render(row)
        if self.text is not None:
            ids = tokenizer(texts["text"])["input_ids"] + eos
            return Example(ids[: self.max_length], meta=row)
        prompt = tokenizer(texts["prompt"])["input_ids"]
        if self.kind == "reward":  # a prompt to answer; the reference, if any, only for diagnostics
            return Example(prompt[-self.max_length :], len(prompt[-self.max_length :]), texts["reference"], meta=row)
        answer = tokenizer(texts["reference"], add_special_tokens=False)["input_ids"] + eos
        ids, plen = _fit(prompt, answer, self.max_length)
        rejected = None
        if "rejected" in texts:
            rej = tokenizer(texts["rejected"], add_special_tokens=False)["input_ids"] + eos
            rejected, _ = _fit(prompt, rej, self.max_length)
        return Example(ids, plen, texts["reference"], row.get("label_index"), rejected, meta=row)

    # ---- training ---------------------------------------------------------------------
    def num_train(self, client: ClientData) -> int:
        return len(client.train)

    def train_batch(self, client: ClientData, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return lm_batch(self.train_prompts(client, batch_size, generator), self._pad_id)


def _has_fields(template: str, row: dict[str, Any]) -> bool:
    """Every field the template names is in ``row`` and not null."""
    import string

    return all(row.get(f) is not None for _, f, _, _ in string.Formatter().parse(template) if f)


def _fit(prompt: list[int], answer: list[int], max_length: int) -> tuple[list[int], int]:
    """Cut to ``max_length``: the prompt loses its beginning first (down to half the budget),
    then the answer its end."""
    answer = answer[: max(max_length - min(len(prompt), max_length // 2), 1)]
    prompt = prompt[-(max_length - len(answer)) :] if max_length > len(answer) else []
    return prompt + answer, len(prompt)


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of prompts padded on the left, as generation wants them."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids, mask


def lm_batch(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded causal-LM batch; padding and prompt tokens are masked out of the loss."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        row = torch.tensor(e.ids)
        ids[i, : len(e.ids)] = row
        mask[i, : len(e.ids)] = 1
        labels[i, e.prompt_len : len(e.ids)] = row[e.prompt_len :]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
