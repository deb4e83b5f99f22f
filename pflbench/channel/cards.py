"""Channel cards: YAML files describing a wireless setting (docs/channels.md).

The presets live in ``pflbench/channel/presets/``; ``pflbench channel show NAME`` prints
where, so a user can copy one, edit it and pass ``--channel my-channel.yaml``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pflbench import registry
from pflbench.channel.pathloss import PATH_LOSS_MODELS
from pflbench.channel.wireless import ALLOCATIONS, POWER_CONTROLS, AirCompChannel, WirelessChannel, WirelessParams
from pflbench.errors import UserError, shown
from pflbench.registry import Entry
from pflbench.yamlcards import packaged_cards, read_card

KINDS = {"ofdma": WirelessChannel, "aircomp": AirCompChannel}
SECTIONS = {"name", "kind", "description", "geometry", "path_loss", "shadowing_db", "p_tx_dbm", "bandwidth", "eta",
            "noise_figure_db", "margin_db", "interference_w", "se_max", "gamma_th_db", "loss_mode", "deadline_s",
            "compute", "aircomp", "power", "mobility", "sources"}


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


def _range(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False, unit: str = ""):
    kw: dict[str, Any] = {"allow_inf_nan": False}
    if lo is not None:
        kw["gt" if lo_open else "ge"] = lo
    if hi is not None:
        kw["lt" if hi_open else "le"] = hi
    return Field(None, **kw, description=unit)


class ChannelRanges(BaseModel):
    """The allowed range of every number of a channel card (pydantic): outside them a card
    describes no working radio link, or the link budget overflows."""

    model_config = ConfigDict(extra="ignore")
    bandwidth_share: float | None = _range(0, 1, lo_open=True)
    bandwidth_per_client_hz: float | None = _range(0, 1e11, lo_open=True, unit="Hz")
    bandwidth_hz: float | None = _range(0, 1e11, unit="Hz")
    eta: float | None = _range(0, 1, lo_open=True)
    se_max: float | None = _range(0, 100, lo_open=True, unit="bit/s/Hz")
    deadline_s: float | None = _range(0, 1e7, lo_open=True, unit="s")
    compute_s_per_step: float | None = _range(0, 1e5, unit="s")
    compute_power_w: float | None = _range(0, 1e4, unit="W")
    p_tx_dbm: float | None = _range(-50, 60, unit="dBm")
    noise_figure_db: float | None = _range(0, 30, unit="dB")
    margin_db: float | None = _range(-30, 60, unit="dB")
    gamma_th_db: float | None = _range(-30, 60, unit="dB")
    r_min: float | None = _range(0, 1e5, unit="m")
    r_max: float | None = _range(0, 1e5, lo_open=True, unit="m")
    h_bs: float | None = _range(0, 1000, unit="m")
    h_ut: float | None = _range(0, 1000, unit="m")
    fc_ghz: float | None = _range(0.1, 100, unit="GHz")
    exponent: float | None = _range(1, 8)
    shadowing_los_db: float | None = _range(0, 30, unit="dB")
    shadowing_nlos_db: float | None = _range(0, 30, unit="dB")
    truncation: float | None = _range(0, 1, hi_open=True)
    receive_snr_db: float | None = _range(-30, 100, unit="dB")
    target_snr_db: float | None = _range(-30, 60, unit="dB")
    p_max_dbm: float | None = _range(-50, 60, unit="dBm")
    speed_kmh: float | None = _range(0, 500, unit="km/h")
    round_s: float | None = _range(0, 1e7, lo_open=True, unit="s")
    doppler_fc_ghz: float | None = _range(0.1, 100, unit="GHz")


# card field names, for messages (the parameters are named after the physics)
CARD_NAMES = {"bandwidth_share": "bandwidth.share", "bandwidth_per_client_hz": "bandwidth.per_client_hz",
              "bandwidth_hz": "bandwidth.total_hz", "compute_s_per_step": "compute.s_per_step",
              "compute_power_w": "compute.power_w", "r_min": "geometry.r_min", "r_max": "geometry.r_max",
              "h_bs": "geometry.h_bs", "h_ut": "geometry.h_ut", "fc_ghz": "path_loss.fc_ghz", "exponent": "path_loss.exponent",
              "shadowing_los_db": "shadowing_db.los", "shadowing_nlos_db": "shadowing_db.nlos",
              "truncation": "aircomp.truncation", "receive_snr_db": "aircomp.receive_snr_db",
              "target_snr_db": "power.target_snr_db", "p_max_dbm": "power.p_max_dbm", "speed_kmh": "mobility.speed_kmh",
              "round_s": "mobility.round_s", "doppler_fc_ghz": "mobility.fc_ghz"}


def _check_ranges(params: WirelessParams, where: str) -> None:
    try:
        ChannelRanges(**{f: getattr(params, f) for f in ChannelRanges.model_fields})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0])
        unit = ChannelRanges.model_fields[field].description
        raise UserError(f"{where}: {CARD_NAMES.get(field, field)}: {err['msg']}{' ' + unit if unit else ''} "
                        f"(got {err.get('input')!r})") from None


def params_from_card(data: Any, where: str) -> WirelessParams:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a YAML mapping")
    missing = [k for k in ("name", "kind", "description", "path_loss", "bandwidth") if k not in data]
    if missing:
        raise UserError(f"{where} lacks required field(s): {', '.join(missing)}")
    unknown = sorted(shown(k) for k in set(data) - SECTIONS)
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
        ("power", {"target_snr_db": "target_snr_db", "p_max_dbm": "p_max_dbm"}),
        ("mobility", {"speed_kmh": "speed_kmh", "round_s": "round_s", "fc_ghz": "doppler_fc_ghz"}),
    ):
        block = sub(section)
        if not isinstance(block, dict):
            raise UserError(f"{where}: {section} must be a mapping")
        words = {"path_loss": {"model"}, "bandwidth": {"allocation"}, "power": {"control"}, "mobility": {"waypoints"}}
        extra = sorted(set(block) - set(mapping) - words.get(section, set()), key=str)
        if extra:
            raise UserError(f"{where}: unknown key(s) {', '.join(map(shown, extra))} in {section}; "
                            f"allowed: {', '.join([*sorted(words.get(section, ())), *mapping])}")
        for key, field in mapping.items():
            if key in block and block[key] is not None:
                out[field] = _num(where, f"{section}.{key}", block[key])
    for section, key, field, allowed in (("bandwidth", "allocation", "allocation", ALLOCATIONS),
                                         ("power", "control", "power_control", POWER_CONTROLS)):
        value = sub(section).get(key)
        if value is not None:
            if not isinstance(value, str) or value not in allowed:
                raise UserError(f"{where}: {section}.{key} must be one of {', '.join(allowed)}, got {value!r}")
            out[field] = value
    waypoints = sub("mobility").get("waypoints")
    if waypoints is not None:
        if not isinstance(waypoints, bool):
            raise UserError(f"{where}: mobility.waypoints must be true or false, got {waypoints!r}")
        out["waypoints"] = waypoints
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
    _check_ranges(params, where)
    if not 0 <= params.r_min < params.r_max:
        raise UserError(f"{where}: geometry needs 0 <= r_min < r_max")
    if not (params.bandwidth_per_client_hz or params.bandwidth_hz > 0):
        raise UserError(f"{where}: bandwidth needs total_hz > 0 or per_client_hz")
    if params.allocation != "equal" and params.bandwidth_per_client_hz:
        raise UserError(f"{where}: bandwidth.allocation {params.allocation} shares total_hz; it cannot go with per_client_hz")
    if params.waypoints and not params.speed_kmh:
        raise UserError(f"{where}: mobility.waypoints needs mobility.speed_kmh > 0")
    if params.kind == "aircomp" and (params.allocation != "equal" or params.power_control != "fixed"):
        raise UserError(f"{where}: an aircomp channel inverts its channel itself; bandwidth.allocation and power apply to ofdma")
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

    if name.endswith((".yaml", ".yml")) and name not in registry.channels.names():
        return load_channel_card(name)
    return registry.channels.get(name)()
