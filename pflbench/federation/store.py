"""Per-client state kept between rounds: private tensors and non-parameter state. The base
model exists once, and a client that has never trained costs nothing here.

A client's private tensors are kept packed in one flat buffer (when they share a dtype and
device, as LoRA and adapter tensors do): one allocation per client instead of one per
tensor, so a thousand clients cost their tensors' bytes plus a few percent."""

from __future__ import annotations

import torch


class ClientStore:
    """Client id -> its private tensors, and client id -> its non-parameter state (the
    method's ``ctx.state``: control variates, counters). A client that never trained has no
    entry and starts from ``initial`` (the state ``Method.prepare`` created) and an empty state."""

    def __init__(self, initial: dict[str, torch.Tensor]):
        self.initial = {n: t.detach().clone() for n, t in initial.items()}
        kinds = {(t.dtype, t.device) for t in self.initial.values()}
        self._layout = [(n, t.shape, t.numel()) for n, t in self.initial.items()] if len(kinds) == 1 else None
        self._state: dict[int, torch.Tensor | dict[str, torch.Tensor]] = {}
        self._extra: dict[int, dict[str, torch.Tensor]] = {}

    def get(self, client: int) -> dict[str, torch.Tensor]:
        """The client's private tensors (the initial ones if it never trained); read only:
        they may be views of its packed buffer."""
        kept = self._state.get(client)
        if kept is None:
            return self.initial
        if isinstance(kept, dict):
            return kept
        return {n: part.view(shape) for (n, shape, _), part in zip(self._layout, kept.split([k for _, _, k in self._layout]))}

    def put(self, client: int, tensors: dict[str, torch.Tensor]) -> None:
        first = next(iter(self.initial.values()), None)
        if (self._layout is not None and list(tensors) == [n for n, _, _ in self._layout]
                and all(t.dtype == first.dtype and t.device == first.device and t.shape == shape
                        for t, (_, shape, _) in zip(tensors.values(), self._layout))):
            self._state[client] = torch.cat([t.detach().reshape(-1) for t in tensors.values()])  # a fresh copy
        else:
            self._state[client] = {n: t.detach().clone() for n, t in tensors.items()}

    def clients(self) -> list[int]:
        """Clients with private tensors of their own."""
        return list(self._state)

    def states(self) -> dict[int, dict[str, torch.Tensor]]:
        """Client -> its non-parameter state (read only)."""
        return self._extra

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
        private = sum(t.numel() * t.element_size() for c in self._state for t in self.get(c).values())
        return private + sum(t.numel() * t.element_size() for s in self._extra.values() for t in s.values())

    def __len__(self) -> int:
        return len(self._state)
