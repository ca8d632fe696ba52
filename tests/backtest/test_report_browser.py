"""The report as a person sees it: headless Chromium opens the file and the charts render.

Playwright drives the system Chromium (Debian package ``chromium``, or the executable named
by ``MLENGINE_CHROMIUM``); Playwright's own browser downloads are never used. Without
Chromium (or Playwright) the tests skip locally and fail when
``MLENGINE_REQUIRE_SERVICES=1`` (CI). Every request that is not a local file is blocked
and recorded, so a page that needs the network fails. Full-page screenshots are saved to
``test-artifacts/`` at the repository root (or ``$MLENGINE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlengine.backtest.report import write_report
from tests.backtest.test_report import BASIC_FIGURES, FULL_FIGURES, HOSTILE, report_inputs
from tests.conftest import unavailable

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--headless",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(
    os.environ.get("MLENGINE_TEST_ARTIFACTS")
    or Path(__file__).resolve().parents[2] / "test-artifacts"
)
WIDTH = 1400
# Per chart: Plotly initialised it (.js-plotly-plot), drew its SVG, and drew data marks:
# line paths, bars, or the heatmap's image.
_INSPECT = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
  id: gd.id,
  svg: gd.querySelectorAll('.main-svg').length,
  traces: (gd._fullData || []).length,
  marks: Array.from(gd.querySelectorAll(
      '.scatterlayer path.js-line, .barlayer .point path, .heatmaplayer image'))
    .filter(el => el.tagName === 'image' || (el.getAttribute('d') || '').length > 10).length,
}))"""
_READY = """n => {
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  return plots.length >= n && plots.every(gd => gd.querySelector('.main-svg'));
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless system Chromium under Playwright."""
    path = os.environ.get("MLENGINE_CHROMIUM") or shutil.which("chromium")
    if not path:
        unavailable("chromium is not installed (Debian package `chromium`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        unavailable(f"playwright is not installed: {err}")
        raise
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Seen:
    """What the browser showed and complained about."""

    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=list)
    h1: str = ""
    badge: str = ""
    log_axis: str | None = None


def look_at(browser: Any, page_file: Path, screenshot: Path, n_figures: int) -> Seen:
    """Open ``page_file`` offline, wait for the charts, inspect them and take a screenshot."""
    seen = Seen()
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})

    def route(r: Any) -> None:
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            seen.blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda err: seen.errors.append(f"page error: {err}"))
    page.on(
        "console",
        lambda msg: seen.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )

    def dialog(d: Any) -> None:  # an alert() would mean markup from the inputs ran
        seen.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    try:
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_function(_READY, arg=n_figures, timeout=30_000)
        seen.plots = page.evaluate(_INSPECT)
        seen.h1 = page.inner_text("header h1")
        seen.badge = page.inner_text("header .badge")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        page.locator("#fig-equity .updatemenu-button").filter(has_text="Log").click()
        seen.log_axis = page.evaluate("document.getElementById('fig-equity').layout.yaxis.type")
    finally:
        context.close()
    return seen


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_rendered(seen: Seen, figures: list[str]) -> None:
    assert seen.errors == []
    assert seen.blocked == []  # nothing fetched from the network
    assert seen.dialogs == []  # no script from the inputs ran
    assert [p["id"] for p in seen.plots] == [f"fig-{f}" for f in figures]
    for plot in seen.plots:
        assert plot["svg"] >= 1, plot
        assert plot["traces"] >= 1, plot
        assert plot["marks"] >= 1, plot
    assert seen.log_axis == "log"  # the equity chart's Log button works


def test_full_report_renders_in_chromium(browser: Any, tmp_path: Path) -> None:
    kwargs = report_inputs()
    page_file = write_report(tmp_path / "report.html", **kwargs)
    shot = ARTIFACTS / "report-full.png"
    seen = look_at(browser, page_file, shot, len(FULL_FIGURES))
    check_rendered(seen, FULL_FIGURES)
    assert seen.h1 == kwargs["title"]
    assert seen.badge.startswith(("EFFECTIVE", "NOT EFFECTIVE"))
    width, height = png_size(shot)
    assert width == WIDTH and height > 4000  # every section is on the page


def test_minimal_report_with_markup_in_the_title(browser: Any, tmp_path: Path) -> None:
    kwargs = report_inputs(full=False) | {"title": HOSTILE}
    page_file = write_report(tmp_path / "minimal.html", **kwargs)
    shot = ARTIFACTS / "report-minimal.png"
    seen = look_at(browser, page_file, shot, len(BASIC_FIGURES))
    check_rendered(seen, BASIC_FIGURES)
    assert seen.h1 == HOSTILE  # shown as text, not run
    assert seen.badge == "no validity verdict"
    assert png_size(shot)[0] == WIDTH
