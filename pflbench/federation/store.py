"""Per-client private tensors, kept between rounds. The base model exists once."""

from __future__ import annotations

import torch


class ClientStore:
    """Client id -> its private tensors. A client that never trained has no entry and
    starts from ``initial`` (the state ``Method.prepare`` created)."""

    def __init__(self, initial: dict[str, torch.Tensor]):
        self.initial = {n: t.detach().clone() for n, t in initial.items()}
        self._state: dict[int, dict[str, torch.Tensor]] = {}

    def get(self, client: int) -> dict[str, torch.Tensor]:
        return self._state.get(client, self.initial)

    def put(self, client: int, tensors: dict[str, torch.Tensor]) -> None:
        self._state[client] = {n: t.detach().clone() for n, t in tensors.items()}

    def has(self, client: int) -> bool:
        return client in self._state

    def nbytes(self) -> int:
        """Bytes held for all clients' private state (not counting ``initial``)."""
        return sum(t.numel() * t.element_size() for s in self._state.values() for t in s.values())

    def __len__(self) -> int:
        return len(self._state)
