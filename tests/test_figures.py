"""The report's figures as a reader sees them: one colour and marker per method in every
figure, no drawn text overlapping other text (checked on the bounding boxes matplotlib lays
out, not on pixels), log axes where values span decades, and no axis text that reads like a
bug."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from pflbench.results import plots

QUICK = Path(__file__).resolve().parents[1] / "leaderboard" / "quick" / "report.json"


def drawn_texts(artist, renderer) -> list[tuple[str, object]]:
    """(text, box) of every visible, non-empty text under ``artist``, skipping hidden
    artists' children (an unused panel) and texts that were laid out nowhere (a tick's unused
    second label)."""
    from matplotlib.axis import Axis
    from matplotlib.text import Text

    if not artist.get_visible():
        return []
    out = []
    if isinstance(artist, Axis):  # only the ticks inside the view are drawn (matplotlib's own filter)
        children = [t for tick in artist._update_ticks() for t in (tick.label1, tick.label2)]
        return [x for c in (*children, artist.label, artist.offsetText) for x in drawn_texts(c, renderer)]
    if isinstance(artist, Text) and artist.get_text().strip():
        box = artist.get_window_extent(renderer)
        if box.width > 1 and box.height > 1:
            out.append((artist.get_text(), box))
    for child in artist.get_children():
        out.extend(drawn_texts(child, renderer))
    return out


def overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of drawn texts of ``fig`` whose boxes intersect by more than a pixel (touching
    is not overlapping), and texts that run into a legend they are not part of."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t, b.padded(-1)) for t, b in drawn_texts(fig, renderer)]
    found = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        own = {t for t, _ in drawn_texts(legend, renderer)}
        box = legend.get_window_extent(renderer).padded(-1)
        found += [("legend", t) for t, b in boxes if t not in own and b.overlaps(box)]
    return found


@pytest.fixture(scope="module")
def quick_rows():
    """The committed quick report's rows: 14 methods, 3 tasks, 7 channels."""
    return json.loads(QUICK.read_text())


def records(methods, tasks=("synth-world",), rounds=(2, 4), seeds=(0, 1)):
    rng = random.Random(0)
    return [{"spec": {"task": t, "method": m, "seed": s},
             "rounds": [{"round": r, "eval": {"score": rng.uniform(0, 80),
                                               "clients": [{"personal": rng.uniform(0, 80)} for _ in range(4)]}} for r in rounds]}
            for t in tasks for m in methods for s in seeds]


def test_the_overlap_check_sees_overlapping_labels():
    """The check can fail: the old figures' way of labelling points (a text beside each point)
    puts two methods with near-equal scores and bytes on top of each other."""
    plt = plots._pyplot()
    fig, ax = plt.subplots()
    for name, x, y in (("pfit", 2.0e6, 63.5), ("pftt", 2.1e6, 63.9), ("local-only", 1e5, 62)):
        ax.annotate(name, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(5e4, 1e7)
    ax.set_ylim(0, 80)
    assert ("pfit", "pftt") in overlaps(fig)
    plt.close(fig)


@pytest.mark.parametrize("draw", ["draw_score_vs_uplink", "draw_gains", "draw_channel_costs"])
def test_no_text_overlaps_in_the_quick_reports_figures(draw, quick_rows):
    fig = getattr(plots, draw)(quick_rows)
    try:
        assert overlaps(fig) == []
    finally:
        plots._pyplot().close(fig)


@pytest.mark.parametrize("methods", [["local-only", "pftt"], sorted(plots.METHOD_STYLE)[:14]])
def test_no_text_overlaps_in_box_plots_and_curves(methods):
    for draw in (plots.draw_client_scores, plots.draw_score_by_round):
        fig = draw(records(methods, tasks=("synth-world", "synth-align")))
        try:
            assert overlaps(fig) == [], draw.__name__
        finally:
            plots._pyplot().close(fig)


def _colours(fig) -> dict[str, str]:
    """Legend label -> the colour drawn for it."""
    from matplotlib.colors import to_hex

    out = {}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            colour = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
            out[text.get_text()] = to_hex(colour[0] if isinstance(colour, list) or getattr(colour, "ndim", 1) > 1 else colour)
    return out


def test_every_method_keeps_one_colour_in_every_figure(quick_rows):
    plt = plots._pyplot()
    figs = [plots.draw_score_vs_uplink(quick_rows), plots.draw_gains(quick_rows), plots.draw_channel_costs(quick_rows),
            plots.draw_score_by_round(records(sorted({r["method"] for r in quick_rows})))]
    seen = [_colours(f) for f in figs]
    for f in figs:
        plt.close(f)
    methods = sorted({r["method"] for r in quick_rows})
    assert len(methods) == 14
    for m in methods:
        drawn = {s[m] for s in seen if m in s}
        assert drawn == {plots.method_style(m)[0]}, (m, drawn)
    # distinct colours and markers for every built-in, distinct colours for installed plugins too
    styles = [plots.method_style(m) for m in plots.METHOD_STYLE]
    assert len({c for c, _ in styles}) == len(styles) and len({mk for _, mk in styles}) == len(styles)
    assert set(plots.EXTRA_COLOURS).isdisjoint(c for c, _ in styles)


def test_plugins_get_their_own_colour_and_keep_it(monkeypatch):
    from pflbench import registry

    monkeypatch.setattr(registry.methods, "names", lambda: [*plots.METHOD_STYLE, "my-a", "my-b", "my-c"])
    got = [plots.method_style(m) for m in ("my-a", "my-b", "my-c")]
    assert len({c for c, _ in got}) == 3 and got == [plots.method_style(m) for m in ("my-a", "my-b", "my-c")]
    assert plots.method_style("uninstalled-one") == plots.method_style("uninstalled-one")


def test_zero_bytes_sit_at_a_marked_position_and_costs_are_on_log_axes(quick_rows):
    plt = plots._pyplot()
    fig = plots.draw_score_vs_uplink(quick_rows)
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "0 B" and "sends nothing" in ax.get_xlabel() and "drawn at" not in ax.get_xlabel()
    assert all(("B" in t) for t in ticks), ticks  # bytes in kB/MB, not 1e+06
    local = next(r for r in quick_rows if r["method"] == "local-only" and r["task"] == "shakespeare-roles")
    xs = {round(float(line.get_xdata()[0])) for line in ax.lines if len(line.get_xdata()) == 1}
    assert local["uplink_bytes"] == 0 and any(x < min(r["uplink_bytes"] for r in quick_rows if r["uplink_bytes"]) / 5 for x in xs)
    plt.close(fig)
    fig = plots.draw_channel_costs(quick_rows)
    assert [a.get_yscale() for a in fig.axes[:3]] == ["log", "log", "linear"]
    plt.close(fig)


def test_the_channels_figure_shows_schedulers_and_their_fairness_without_overlaps():
    """leaderboard/schedulers/report.json (the committed scheduler sweep): a bar group per
    channel and scheduler, a fourth panel of Jain's fairness, every label readable."""
    rows = json.loads((Path(__file__).resolve().parents[1] / "leaderboard" / "schedulers" / "report.json").read_text())
    fig = plots.draw_channel_costs(rows)
    axes = fig.axes
    assert len(axes) == 4 and "fairness" in axes[3].get_ylabel()
    ticks = [t.get_text() for t in axes[0].get_xticklabels()]
    assert len(ticks) == 12 and "lte-cell-edge · best-channel" in ticks
    assert overlaps(fig) == []
    # one scheduler, several channels: the figure as before, three panels
    assert len(plots.draw_channel_costs([r for r in rows if r["scheduler"] == "random"]).axes) == 3
