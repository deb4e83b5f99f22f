"""``pflbench report``: the tables and figures of a results folder, as Markdown, CSV, JSON
and one self-contained HTML page (figures embedded as PNG data, no external file or script)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from pflbench.errors import UserError
from pflbench.results import plots
from pflbench.results.protocols import report_tables
from pflbench.results.record import dumps
from pflbench.results.table import channel_table, group, render, render_csv, scheduler_table, summary_rows, task_table

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}
p.legend{font-size:12px;color:#555}"""


def _task_html(text: str) -> str:
    """A task's table (tabulate's html format) and its surrounding text, as HTML."""
    out = []
    for chunk in text.split("\n\n"):
        if chunk.startswith("<table"):
            out.append(chunk)
        elif chunk.startswith("### "):
            out.append(f"<h2>{html.escape(chunk[4:])}</h2>")
        elif chunk.startswith("Cells:"):
            out.append(f'<p class="legend">{html.escape(chunk)}</p>')
        else:
            out.append(f"<p>{html.escape(chunk)}</p>")
    return "\n".join(out)


def build(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write report.md, report.csv, report.json, the figures (PNG) and report.html into
    ``out``; return the files written."""

    if not records:
        raise UserError("no finished run records to report on")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from None
    rows = summary_rows(records)
    written = []

    def write(name: str, text: str) -> None:
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)

    channels, schedulers, protocols = channel_table(records), scheduler_table(records), report_tables(records)
    write("report.md", render(records) + "".join(f"\n\n{t}" for t in (channels, schedulers, protocols) if t) + "\n")
    write("report.csv", render_csv(records))
    write("report.json", dumps(rows, indent=1) + "\n")
    figures: list[tuple[str, str]] = []  # (file, caption)

    def figure(name: str, caption: str, draw) -> None:
        if draw(out / name) is not False:
            figures.append((name, caption))
            written.append(out / name)

    figure("score-vs-uplink.png", "Score against uplink bytes per run; the dashed line is the Pareto front.",
           lambda p: plots.score_vs_uplink(rows, p))
    figure("score-vs-cumulative-uplink.png", "Score against the uplink spent so far, at round 0 and every evaluated round "
           "(mean over seeds; band: 95% interval).", lambda p: plots.score_vs_cumulative_uplink(records, p))
    figure("client-scores.png", "Per-client scores of the deployed models.", lambda p: plots.client_scores(records, p))
    figure("score-by-round.png", "Score by round (runs evaluated every few rounds).", lambda p: plots.score_by_round(records, p))
    figure("gains.png", "Personalization gain against collaboration gain.", lambda p: plots.gains(rows, p))
    figure("channels.png", "Airtime, energy and lost updates by channel (and scheduler, with fairness).", lambda p: plots.channel_costs(rows, p))
    if plots.reward_points(records):
        figure("rewards.png", "Reward tasks: each client's helpfulness against its harmlessness, coloured by its weight.",
               lambda p: plots.reward_scatter(records, p))
    body = [_task_html(task_table(task, trs, "html")) for task, trs in group(records).items()]
    if channels:
        body.append(_task_html(channel_table(records, "html")))
    if schedulers:
        body.append(_task_html(scheduler_table(records, "html")))
    if protocols:
        body.append(_task_html(report_tables(records, "html")))
    for name, caption in figures:
        data = base64.b64encode((out / name).read_bytes()).decode()
        body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pflbench report</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>pflbench report</h1>\n<p>{len(records)} runs. Tables: mean ± half-width "
            f"of the 95% t interval over seeds; * marks a resolved paired difference.</p>\n" + "\n".join(body) + "\n</body></html>\n")
    write("report.html", page)
    return written
