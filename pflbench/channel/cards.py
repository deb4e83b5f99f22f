"""Channel cards: YAML files describing a wireless setting (docs/channels.md).

The presets live in ``pflbench/channel/presets/``; ``pflbench channel show NAME`` prints
where, so a user can copy one, edit it and pass ``--channel my-channel.yaml``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pflbench.channel.pathloss import PATH_LOSS_MODELS
from pflbench.channel.wireless import AirCompChannel, WirelessChannel, WirelessParams
from pflbench.errors import UserError
from pflbench.registry import Entry
from pflbench.yamlcards import packaged_cards, read_card

KINDS = {"ofdma": WirelessChannel, "aircomp": AirCompChannel}
SECTIONS = {"name", "kind", "description", "geometry", "path_loss", "shadowing_db", "p_tx_dbm", "bandwidth", "eta",
            "noise_figure_db", "margin_db", "interference_w", "se_max", "gamma_th_db", "loss_mode", "deadline_s",
            "compute", "aircomp", "sources"}


def _num(where: str, key: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise UserError(f"{where}: {key} must be a finite number, got {value!r}")
    return out


# (field, test, what is allowed): ranges outside which a card describes no working link
RANGES = (
    ("bandwidth_share", lambda v: 0 < v <= 1, "bandwidth.share must be in (0, 1]"),
    ("bandwidth_per_client_hz", lambda v: v > 0, "bandwidth.per_client_hz must be positive"),
    ("eta", lambda v: 0 < v <= 1, "eta (the rate efficiency) must be in (0, 1]"),
    ("se_max", lambda v: v > 0, "se_max (bit/s/Hz) must be positive"),
    ("deadline_s", lambda v: v > 0, "deadline_s must be positive"),
    ("compute_s_per_step", lambda v: v >= 0, "compute.s_per_step must be >= 0"),
    ("compute_power_w", lambda v: v >= 0, "compute.power_w must be >= 0"),
    # physical ranges: outside them a card describes no radio link (and the arithmetic overflows)
    ("p_tx_dbm", lambda v: -50 <= v <= 60, "p_tx_dbm must be in [-50, 60] dBm"),
    ("noise_figure_db", lambda v: 0 <= v <= 30, "noise_figure_db must be in [0, 30] dB"),
    ("margin_db", lambda v: -30 <= v <= 60, "margin_db must be in [-30, 60] dB"),
    ("gamma_th_db", lambda v: -30 <= v <= 60, "gamma_th_db must be in [-30, 60] dB"),
    ("r_min", lambda v: 0 <= v <= 1e5, "geometry.r_min must be in [0, 100000] m"),
    ("r_max", lambda v: 0 < v <= 1e5, "geometry.r_max must be in (0, 100000] m"),
    ("h_bs", lambda v: 0 <= v <= 1000, "geometry.h_bs must be in [0, 1000] m"),
    ("h_ut", lambda v: 0 <= v <= 1000, "geometry.h_ut must be in [0, 1000] m"),
    ("fc_ghz", lambda v: 0.1 <= v <= 100, "path_loss.fc_ghz must be in [0.1, 100] GHz"),
    ("exponent", lambda v: 1 <= v <= 8, "path_loss.exponent must be in [1, 8]"),
    ("shadowing_los_db", lambda v: 0 <= v <= 30, "shadowing_db.los must be in [0, 30] dB"),
    ("shadowing_nlos_db", lambda v: 0 <= v <= 30, "shadowing_db.nlos must be in [0, 30] dB"),
    ("bandwidth_hz", lambda v: 0 <= v <= 1e11, "bandwidth.total_hz must be in [0, 1e11] Hz"),
    ("truncation", lambda v: 0 <= v < 1, "aircomp.truncation must be in [0, 1)"),
    ("receive_snr_db", lambda v: -30 <= v <= 100, "aircomp.receive_snr_db must be in [-30, 100] dB"),
)


def params_from_card(data: Any, where: str) -> WirelessParams:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a YAML mapping")
    missing = [k for k in ("name", "kind", "description", "path_loss", "bandwidth") if k not in data]
    if missing:
        raise UserError(f"{where} lacks required field(s): {', '.join(missing)}")
    unknown = sorted(set(data) - SECTIONS)
    if unknown:
        raise UserError(f"{where} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SECTIONS))}")
    if not isinstance(data["kind"], str) or data["kind"] not in KINDS:
        raise UserError(f"{where}: kind must be one of {', '.join(KINDS)}, got {data['kind']!r}")
    out: dict[str, Any] = {"name": str(data["name"]), "description": str(data["description"]).strip(), "kind": data["kind"]}
    sub = lambda key: data.get(key) if data.get(key) is not None else {}  # noqa: E731
    for section, mapping in (
        ("geometry", {"r_min": "r_min", "r_max": "r_max", "h_bs": "h_bs", "h_ut": "h_ut"}),
        ("path_loss", {"fc_ghz": "fc_ghz", "exponent": "exponent"}),
        ("shadowing_db", {"los": "shadowing_los_db", "nlos": "shadowing_nlos_db"}),
        ("bandwidth", {"total_hz": "bandwidth_hz", "share": "bandwidth_share", "per_client_hz": "bandwidth_per_client_hz"}),
        ("compute", {"s_per_step": "compute_s_per_step", "power_w": "compute_power_w"}),
        ("aircomp", {"truncation": "truncation", "receive_snr_db": "receive_snr_db"}),
    ):
        block = sub(section)
        if not isinstance(block, dict):
            raise UserError(f"{where}: {section} must be a mapping")
        extra = sorted(set(block) - set(mapping) - ({"model"} if section == "path_loss" else set()))
        if extra:
            raise UserError(f"{where}: unknown key(s) {', '.join(extra)} in {section}; allowed: {', '.join(mapping)}")
        for key, field in mapping.items():
            if key in block and block[key] is not None:
                out[field] = _num(where, f"{section}.{key}", block[key])
    model = sub("path_loss").get("model")
    if not isinstance(model, str) or model not in PATH_LOSS_MODELS:
        raise UserError(f"{where}: path_loss.model must be one of {', '.join(PATH_LOSS_MODELS)}, got {model!r}")
    out["path_loss"] = model
    if model in ("inh-office", "uma", "rma-nlos") and out.get("fc_ghz") is None:
        raise UserError(f"{where}: path_loss.fc_ghz is required for {model}")
    for key in ("p_tx_dbm", "eta", "noise_figure_db", "margin_db", "se_max", "gamma_th_db", "deadline_s"):
        if data.get(key) is not None:
            out[key] = _num(where, key, data[key])
    if data.get("interference_w") is not None:
        lo_hi = data["interference_w"]
        if not (isinstance(lo_hi, list) and len(lo_hi) == 2):
            raise UserError(f"{where}: interference_w must be [low, high] in watts")
        out["interference_w"] = (_num(where, "interference_w", lo_hi[0]), _num(where, "interference_w", lo_hi[1]))
        if not 0 <= out["interference_w"][0] <= out["interference_w"][1] <= 1:
            raise UserError(f"{where}: interference_w must be [low, high] with 0 <= low <= high <= 1 W")
    mode = data.get("loss_mode", "drop")
    if not isinstance(mode, str) or mode not in ("drop", "retransmit"):
        raise UserError(f"{where}: loss_mode must be drop or retransmit, got {mode!r}")
    out["loss_mode"] = mode
    if not isinstance(data.get("sources") or {}, dict):
        raise UserError(f"{where}: sources must map a field to where its value comes from")
    out["source"] = {str(k): str(v) for k, v in (data.get("sources") or {}).items()}
    params = WirelessParams(**out)
    for field, ok, allowed in RANGES:
        value = getattr(params, field, None)
        if value is not None and not ok(value):
            raise UserError(f"{where}: {allowed}, got {value:g}")
    if not 0 <= params.r_min < params.r_max:
        raise UserError(f"{where}: geometry needs 0 <= r_min < r_max")
    if not (params.bandwidth_per_client_hz or params.bandwidth_hz > 0):
        raise UserError(f"{where}: bandwidth needs total_hz > 0 or per_client_hz")
    return params


def load_channel_card(path: Path | str):
    data, where = read_card(Path(path), "channel")
    params = params_from_card(data, where)
    channel = KINDS[params.kind](params)
    channel.card = str(path)
    return channel


def builtin_channel_entries() -> dict[str, Entry]:
    # the registry hands out a factory: a fresh channel per run
    return {name: Entry(name, lambda p=path: (lambda: load_channel_card(p)), str(path))
            for name, path in packaged_cards("pflbench.channel.presets").items()}


def resolve_channel(name: str):
    """A fresh channel: a registered name, or a path to a channel card."""
    from pflbench import registry

    if name.endswith((".yaml", ".yml")) and name not in registry.channels.names():
        return load_channel_card(name)
    return registry.channels.get(name)()
