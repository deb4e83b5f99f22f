"""pflbench report: Markdown, CSV, JSON, figures and one self-contained HTML page, opened in
a real headless browser (Debian's chromium, driven by selenium)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from pflbench.federation.engine import run
from pflbench.results.record import load_records


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from dataclasses import replace

    from conftest import SMALL

    out = tmp_path_factory.mktemp("report-runs")
    for seed in (0, 1):
        for method in ("fedavg-lora", "local-only", "pftt"):
            for channel in ("ideal", "lte-cell-edge"):
                run(replace(SMALL, method=method, seed=seed, channel=channel, task="synth-world", eval_every=1, local_steps=3), out)
    return out


def test_report_writes_tables_numbers_and_figures(results, cli, tmp_path):
    code, out, err = cli("report", str(results), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    names = {p.rsplit("/", 1)[-1] for p in out.split()}
    assert {"report.md", "report.csv", "report.json", "report.html", "score-vs-uplink.png", "client-scores.png",
            "score-by-round.png", "score-vs-cumulative-uplink.png", "gains.png", "channels.png"} <= names
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(rows) == 3 * 2 and {r["channel"] for r in rows} == {"ideal", "lte-cell-edge"}
    assert len(list(csv.DictReader((tmp_path / "rep" / "report.csv").open()))) == 6
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    # the table, its sub-scores, channels, quality under a budget, cost to a target
    assert page.count("data:image/png;base64,") == 6 and page.count("<table") == 5
    md = (tmp_path / "rep" / "report.md").read_text()
    channels = md[md.index("### synth-world: what each channel costs"):]
    by = {(r["method"], r["channel"]): r for r in rows}
    lossy = by["fedavg-lora", "lte-cell-edge"]
    line = next(l for l in channels.splitlines() if l.startswith("| fedavg-lora") and "lte-cell-edge" in l)
    assert f"{lossy['lost_updates']:.1f}" in line and f"{lossy['airtime_s']:.2f}" in line
    assert lossy["airtime_s"] > 0 and by["fedavg-lora", "ideal"]["airtime_s"] == 0


def test_a_report_that_cannot_be_written_is_one_line(results, cli, tmp_path, monkeypatch):
    """--out that is a file, and a full disk while the report is written: one line each,
    exit 2, the records untouched."""
    from pathlib import Path

    before = sorted(p.name for p in results.iterdir())
    (tmp_path / "a-file").write_text("not a folder")
    code, _, err = cli("report", str(results), "--out", str(tmp_path / "a-file"))
    assert code == 2 and err.count("\n") == 1 and "cannot create" in err, err
    real = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.startswith("report"):
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    code, _, err = cli("report", str(results), "--out", str(tmp_path / "rep"))
    last = err.strip().splitlines()[-1]
    assert code == 2 and last == f"error: cannot write the report to {tmp_path / 'rep'}: No space left on device; the run records are unchanged", err
    assert "Traceback" not in err and sorted(p.name for p in results.iterdir()) == before


def test_pareto_front_keeps_what_nothing_beats():
    from pflbench.results.plots import pareto_front

    rows = [{"uplink_bytes": b, "score": s, "n": i} for i, (b, s) in enumerate([(0, 10), (5, 8), (5, 12), (9, 11), (20, 30)])]
    assert [r["n"] for r in pareto_front(rows)] == [0, 2, 4]


def test_report_page_renders_in_a_headless_browser(results, tmp_path):
    """Opened in chromium: the page renders its title and tables, every image loads, and the
    console shows no error."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from pflbench.results.report import build

    build(load_records(results), tmp_path / "rep")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromium-driver are needed: `make setup` installs them (apt-get)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get((tmp_path / "rep" / "report.html").as_uri())
        assert driver.title == "pflbench report"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == 6 and all(done and w > 100 and h > 100 for done, w, h in images), images
        assert driver.execute_script("return document.querySelectorAll('table tr').length") > 6
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()
