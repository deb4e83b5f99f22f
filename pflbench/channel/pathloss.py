"""Path loss in dB and line-of-sight probability (docs/channels.md gives the sources).

Distances in metres, carrier frequency ``fc`` in GHz, antenna heights in metres. All
functions take numpy arrays of distances.
"""

from __future__ import annotations

import numpy as np

C = 299_792_458.0  # speed of light, m/s


def _d3d(d2d, h_bs, h_ut):
    return np.sqrt(np.asarray(d2d, dtype=float) ** 2 + (h_bs - h_ut) ** 2)


# ---- 3GPP TR 38.901 v17, Table 7.4.1-1 ------------------------------------------------------
def inh_office(d2d, fc, h_bs=3.0, h_ut=1.0, los=True):
    """Indoor hotspot, office. LOS: 32.4 + 17.3 log10(d3D) + 20 log10(fc);
    NLOS: max(PL_LOS, 17.3 + 38.3 log10(d3D) + 24.9 log10(fc))."""
    d = _d3d(d2d, h_bs, h_ut)
    pl_los = 32.4 + 17.3 * np.log10(d) + 20 * np.log10(fc)
    pl_nlos = np.maximum(pl_los, 17.3 + 38.3 * np.log10(d) + 24.9 * np.log10(fc))
    return np.where(los, pl_los, pl_nlos)


def inh_mixed_los_probability(d2d):
    """TR 38.901 Table 7.4.2-1, InH mixed office."""
    d = np.asarray(d2d, dtype=float)
    return np.where(d <= 1.2, 1.0, np.where(d < 6.5, np.exp(-(d - 1.2) / 4.7), np.exp(-(d - 6.5) / 32.6) * 0.32))


def uma(d2d, fc, h_bs=25.0, h_ut=1.5, los=True):
    """Urban macro. LOS: 28 + 22 log10(d3D) + 20 log10(fc) up to the breakpoint
    d'BP = 4 h'BS h'UT fc / c (effective heights h - 1 m), then
    28 + 40 log10(d3D) + 20 log10(fc) - 9 log10(d'BP^2 + (hBS - hUT)^2).
    NLOS: max(PL_LOS, 13.54 + 39.08 log10(d3D) + 20 log10(fc) - 0.6 (hUT - 1.5))."""
    d2d = np.asarray(d2d, dtype=float)
    d = _d3d(d2d, h_bs, h_ut)
    d_bp = 4 * (h_bs - 1.0) * (h_ut - 1.0) * fc * 1e9 / C
    pl1 = 28.0 + 22 * np.log10(d) + 20 * np.log10(fc)
    pl2 = 28.0 + 40 * np.log10(d) + 20 * np.log10(fc) - 9 * np.log10(d_bp**2 + (h_bs - h_ut) ** 2)
    pl_los = np.where(d2d <= d_bp, pl1, pl2)
    pl_nlos = np.maximum(pl_los, 13.54 + 39.08 * np.log10(d) + 20 * np.log10(fc) - 0.6 * (h_ut - 1.5))
    return np.where(los, pl_los, pl_nlos)


def uma_los_probability(d2d, h_ut=1.5):
    """TR 38.901 Table 7.4.2-1, UMa (C'(hUT) = 0 for hUT <= 13 m)."""
    d = np.maximum(np.asarray(d2d, dtype=float), 1e-9)
    base = np.where(d <= 18, 1.0, 18 / d + np.exp(-d / 63) * (1 - 18 / d))
    c = 0.0 if h_ut <= 13 else ((h_ut - 13) / 10) ** 1.5
    return np.where(d <= 18, 1.0, base * (1 + c * 5 / 4 * (d / 100) ** 3 * np.exp(-d / 150)))


def rma_nlos(d2d, fc, h_bs=35.0, h_ut=1.5, h=5.0, w=20.0):
    """Rural macro, NLOS: max(PL_RMa-LOS, PL'_NLOS) with
    PL'_NLOS = 161.04 - 7.1 log10(W) + 7.5 log10(h) - (24.37 - 3.7 (h/hBS)^2) log10(hBS)
               + (43.42 - 3.1 log10(hBS)) (log10(d3D) - 3) + 20 log10(fc)
               - (3.2 (log10(11.75 hUT))^2 - 4.97)."""
    d2d = np.asarray(d2d, dtype=float)
    d = _d3d(d2d, h_bs, h_ut)
    pl_nlos = (161.04 - 7.1 * np.log10(w) + 7.5 * np.log10(h) - (24.37 - 3.7 * (h / h_bs) ** 2) * np.log10(h_bs)
               + (43.42 - 3.1 * np.log10(h_bs)) * (np.log10(d) - 3) + 20 * np.log10(fc)
               - (3.2 * np.log10(11.75 * h_ut) ** 2 - 4.97))
    return np.maximum(rma_los(d2d, fc, h_bs, h_ut, h), pl_nlos)


def rma_los(d2d, fc, h_bs=35.0, h_ut=1.5, h=5.0):
    """Rural macro, LOS: PL1 = 20 log10(40 pi d3D fc / 3) + min(0.03 h^1.72, 10) log10(d3D)
    - min(0.044 h^1.72, 14.77) + 0.002 log10(h) d3D up to dBP = 2 pi hBS hUT fc / c, then
    PL1(dBP) + 40 log10(d3D / dBP)."""
    d2d = np.asarray(d2d, dtype=float)
    d = _d3d(d2d, h_bs, h_ut)
    d_bp = 2 * np.pi * h_bs * h_ut * fc * 1e9 / C

    def pl1(x):
        return (20 * np.log10(40 * np.pi * x * fc / 3) + min(0.03 * h**1.72, 10) * np.log10(x)
                - min(0.044 * h**1.72, 14.77) + 0.002 * np.log10(h) * x)

    return np.where(d2d <= d_bp, pl1(d), pl1(d_bp) + 40 * np.log10(d / d_bp))


# ---- 3GPP TR 36.814, Table A.2.1.1.2-3 (macro, 2 GHz) -----------------------------------------
def tr36814_macro(d2d):
    """128.1 + 37.6 log10(R), R in km."""
    return 128.1 + 37.6 * np.log10(np.asarray(d2d, dtype=float) / 1000.0)


# ---- Chen et al., IEEE TWC 2020: path gain d^-alpha ------------------------------------------
def power_law(d2d, exponent=2.0):
    """10 alpha log10(d), d in metres (clamped to 1 m): the path gain d^-alpha in dB."""
    return 10 * exponent * np.log10(np.maximum(np.asarray(d2d, dtype=float), 1.0))


def path_loss(model: str, d2d, los, p: dict):
    """Dispatch by the card's ``path_loss.model``."""
    fc = p.get("fc_ghz")
    if model == "inh-office":
        return inh_office(d2d, fc, p["h_bs"], p["h_ut"], los)
    if model == "uma":
        return uma(d2d, fc, p["h_bs"], p["h_ut"], los)
    if model == "rma-nlos":
        return rma_nlos(d2d, fc, p["h_bs"], p["h_ut"])
    if model == "tr36814":
        return tr36814_macro(d2d)
    if model == "power-law":
        return power_law(d2d, p.get("exponent", 2.0))
    raise ValueError(model)


def los_probability(model: str, d2d, p: dict):
    if model == "inh-office":
        return inh_mixed_los_probability(d2d)
    if model == "uma":
        return uma_los_probability(d2d, p["h_ut"])
    return np.zeros_like(np.asarray(d2d, dtype=float))  # the other models are NLOS-only


PATH_LOSS_MODELS = ("inh-office", "uma", "rma-nlos", "tr36814", "power-law")
