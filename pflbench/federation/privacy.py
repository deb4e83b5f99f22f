"""Client-level differential privacy on the uplink (``--dp clip=C,noise=Z[,mode=...][,delta=D]``).

What a client uploads in a round (its shared deltas and the method's messages, all together)
is clipped to L2 norm ``clip`` = C. Then Gaussian noise is added, as Flower's DP modifiers do:

- ``local`` (Flower's ``LocalDpMod``): each client adds noise of standard deviation Z * C to
  its clipped upload before encoding it; the server, and anyone on the channel, only ever sees
  noised uploads.
- ``central`` (Flower's server-side fixed clipping): the server clips every upload it decodes,
  aggregates, and adds noise of standard deviation Z * C / K to the change of the global shared
  tensors, K the updates aggregated that round. Clients must trust the server with their
  clipped, un-noised uploads; the guarantee is towards everyone who sees the global model.

The privacy budget: each round is a Gaussian mechanism of noise multiplier Z on the clipped
uploads, with the round's clients drawn uniformly without replacement (clients per round of
clients), composed over the rounds run, accounted by Google's ``dp-accounting`` (its RDP
accountant, replace-one adjacency, as for sampling without replacement) at ``delta`` (default
1 / clients). Under a scheduler other than ``random`` the clients are not a uniform draw, so no
amplification by sampling is claimed (every client counted in every round). ``epsilon`` is a
function of the rounds run, so a resumed run's is the uninterrupted one's.

Central noise covers the global shared tensors only, so a method whose uploads carry messages
into server state (SCAFFOLD's control variates) is refused under central DP. A method that
uploads nothing (local-only, central) spends no budget: epsilon 0. Private tensors never leave
the client and are not clipped, noised or accounted.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from pflbench.errors import UserError

DP_TAG = 5  # the noise generators (engine: 1 sampling, 2 channel; client: 3; resolve: 4)


def generator(seed: int, round_idx: int, client: int) -> torch.Generator:
    """The noise of client ``client`` (-1: the server's central noise) in round ``round_idx``."""
    import numpy as np

    state = np.random.SeedSequence([seed, round_idx, client + 1, DP_TAG]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def clip(tensors: dict[str, torch.Tensor], bound: float) -> tuple[dict[str, torch.Tensor], float]:
    """``tensors`` scaled together to an L2 norm of at most ``bound``; and their norm before."""
    norm = math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors.values()))
    scale = min(1.0, bound / norm) if norm > 0 else 1.0
    return {n: t * scale for n, t in tensors.items()}, norm


def noised(tensors: dict[str, torch.Tensor], std: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``tensors`` plus independent Gaussian noise of standard deviation ``std``, drawn from
    ``gen`` in the order of the names."""
    if std <= 0:
        return dict(tensors)
    return {n: t + std * torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.device, t.dtype) for n, t in sorted(tensors.items())}


def local_upload(dp: dict[str, Any], upload: dict[str, torch.Tensor], seed: int, round_idx: int, client: int) -> dict[str, torch.Tensor]:
    """What a client sends under local DP: its upload clipped to C, plus noise Z * C."""
    clipped, _ = clip(upload, dp["clip"])
    return noised(clipped, dp["noise"] * dp["clip"], generator(seed, round_idx, client))


def central_noise(dp: dict[str, Any], before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], k: int,
                  seed: int, round_idx: int) -> dict[str, torch.Tensor]:
    """The global shared tensors after central DP's noise: ``after`` plus noise Z * C / k (the
    aggregate of k clipped updates)."""
    if k <= 0:
        return after
    change = noised({n: after[n] - before[n] for n in after}, dp["noise"] * dp["clip"] / k, generator(seed, round_idx, -1))
    return {n: before[n] + change[n] for n in after}


def check(dp: dict[str, Any], method, parts) -> None:
    """Refuse combinations the accounting would not cover, in one line."""
    if dp and dp["mode"] == "central" and parts.messages:
        raise UserError(f"--dp mode=central adds noise to the global shared tensors only; {method!r} also uploads "
                        f"{len(parts.messages)} message tensor(s) into server state: use mode=local")


def delta_of(dp: dict[str, Any], clients: int) -> float:
    return dp["delta"] if dp.get("delta") is not None else 1.0 / clients


def epsilon(dp: dict[str, Any], clients: int, per_round: int, rounds: int, uniform: bool = True) -> float:
    """The (epsilon, delta) budget spent by ``rounds`` rounds: ``dp-accounting``'s RDP
    accountant, each round a Gaussian mechanism of noise multiplier ``noise`` on ``per_round``
    of ``clients`` drawn without replacement (``uniform``), else on every client."""
    return _epsilon(float(dp["noise"]), clients, per_round if uniform else clients, rounds, delta_of(dp, clients))


@functools.lru_cache(maxsize=4096)
def _epsilon(noise: float, clients: int, per_round: int, rounds: int, delta: float) -> float:
    if rounds <= 0:
        return 0.0
    if noise <= 0:
        return math.inf
    dpa = accounting()
    from dp_accounting.rdp import RdpAccountant

    gaussian = dpa.GaussianDpEvent(noise)
    event = gaussian if per_round >= clients else dpa.SampledWithoutReplacementDpEvent(clients, per_round, gaussian)
    accountant = RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dpa.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


def accounting():
    """Google's ``dp_accounting``, or one line saying how to install it."""
    try:
        import dp_accounting
    except ImportError:
        raise UserError("--dp needs Google's dp-accounting: pip install 'pflbench[privacy]'") from None
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # orders the accountant skips, not errors
    return dp_accounting
