"""Per-client state kept between rounds: private tensors and non-parameter state. The base
model exists once."""

from __future__ import annotations

import torch


class ClientStore:
    """Client id -> its private tensors, and client id -> its non-parameter state (the
    method's ``ctx.state``: control variates, counters). A client that never trained has no
    entry and starts from ``initial`` (the state ``Method.prepare`` created) and an empty state."""

    def __init__(self, initial: dict[str, torch.Tensor]):
        self.initial = {n: t.detach().clone() for n, t in initial.items()}
        self._state: dict[int, dict[str, torch.Tensor]] = {}
        self._extra: dict[int, dict[str, torch.Tensor]] = {}

    def get(self, client: int) -> dict[str, torch.Tensor]:
        return self._state.get(client, self.initial)

    def put(self, client: int, tensors: dict[str, torch.Tensor]) -> None:
        self._state[client] = {n: t.detach().clone() for n, t in tensors.items()}

    def has(self, client: int) -> bool:
        return client in self._state

    def get_state(self, client: int) -> dict[str, torch.Tensor]:
        """A copy of the client's non-parameter state (the local update may change it freely)."""
        return dict(self._extra.get(client, {}))

    def put_state(self, client: int, state: dict[str, torch.Tensor]) -> None:
        bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"client state holds tensors under string keys only; got {bad[:3]}")
        if state:
            self._extra[client] = {n: t.detach().clone() for n, t in state.items()}
        else:
            self._extra.pop(client, None)

    def nbytes(self) -> int:
        """Bytes held for all clients' private tensors and state (not counting ``initial``)."""
        return sum(t.numel() * t.element_size() for d in (self._state, self._extra) for s in d.values() for t in s.values())

    def __len__(self) -> int:
        return len(self._state)
