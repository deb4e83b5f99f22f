"""Summary statistics over per-client scores (DESIGN.md, "Definitions")."""

from __future__ import annotations


def summarize_scores(clients: list[dict]) -> dict:
    """``clients``: one dict per client with ``personal`` (shared + private, the deployed
    model), ``shared`` (shared alone), ``trained`` (was it ever sampled) and ``diagnostics``
    (the metric's sub-scores of the deployed model, possibly empty).

    personalization gain = mean over clients of (personal - shared), in points; exactly
    zero for a method without private state.
    """
    n = len(clients)
    diagnostics = sorted({k for c in clients for k in c.get("diagnostics", {})})
    personal = [c["personal"] for c in clients]
    unseen = [c["personal"] for c in clients if not c["trained"]]
    audited = [c["membership"] for c in clients if c.get("membership")]
    leaked = {} if not audited else {  # --membership: the attack's mean AUC over the clients
        "membership_auc": _mean([m["personal"] for m in audited if m.get("personal") is not None]),
        "membership_auc_shared": _mean([m["shared"] for m in audited if m.get("shared") is not None]),
        # the attack on the uploads the server decoded at this round (clients that sent one)
        "membership_auc_upload": _mean([m["upload"] for m in audited if m.get("upload") is not None])}
    return {**leaked,
        "score": sum(personal) / n,
        "shared_score": sum(c["shared"] for c in clients) / n,
        "personalization_gain": sum(c["personal"] - c["shared"] for c in clients) / n,
        "worst_client_score": min(personal),
        "unseen_client_score": sum(unseen) / len(unseen) if unseen else None,
        "unseen_clients": len(unseen),
        # a metric's sub-scores (knowledge, style, ...): mean over the clients that have one
        "diagnostics": {k: _mean([c["diagnostics"][k] for c in clients if c.get("diagnostics", {}).get(k) is not None]) for k in diagnostics},
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
