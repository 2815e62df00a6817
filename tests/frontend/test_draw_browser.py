"""The drawing page in a real browser: Debian's chromium driven by Playwright, against pytest-django's live server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.search.fakes import LABELS, BuiltIndex

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


def draw_stroke(page: Any, box: dict[str, float], points: list[tuple[float, float]]) -> None:
    """Draw through ``points`` given as fractions of the canvas box."""
    x0, y0 = points[0]
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
    page.mouse.up()


def search_count(page: Any) -> int:
    return int(page.evaluate("Number(document.body.dataset.searchCount || 0)"))


def wait_for_search_after(page: Any, count: int) -> None:
    page.wait_for_function(
        "n => Number(document.body.dataset.searchCount || 0) > n"
        " && document.getElementById('results').dataset.state === 'done'",
        arg=count,
        timeout=15_000,
    )


def canvas_png(page: Any) -> str:
    return str(page.evaluate("document.getElementById('sketch').toDataURL('image/png')"))


def test_draw_search_undo_example_and_clear(live_server: Any, live_index: BuiltIndex) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu"],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            console_errors: list[str] = []
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            failed_images: list[str] = []
            page.on(
                "response", lambda r: failed_images.append(r.url) if "/media/" in r.url and r.status != 200 else None
            )
            page.goto(live_server.url + "/")
            assert any(c["name"] == "csrftoken" for c in page.context.cookies())
            # The index selector is filled from /api/indexes/.
            page.wait_for_function("document.getElementById('index-select').options.length >= 2")
            blank = canvas_png(page)

            canvas = page.get_by_test_id("sketch-canvas")
            box = canvas.bounding_box()
            assert box is not None
            draw_stroke(page, box, [(0.2, 0.2), (0.5, 0.35), (0.8, 0.2)])
            draw_stroke(page, box, [(0.3, 0.5), (0.4, 0.8), (0.7, 0.75)])
            draw_stroke(page, box, [(0.8, 0.4), (0.6, 0.6)])
            wait_for_search_after(page, 0)

            items = page.get_by_test_id("result-item")
            assert items.count() > 0
            labels = page.get_by_test_id("result-label").all_inner_texts()
            assert labels
            assert set(labels) <= set(LABELS)
            assert "similar image" in page.get_by_test_id("status").inner_text()
            stats = page.get_by_test_id("stats").inner_text()
            assert "Candidates scored" in stats
            assert "IE" in stats
            assert page.get_by_test_id("undo").is_enabled()

            # Undo: the canvas changes and a new search runs.
            drawn = canvas_png(page)
            before = search_count(page)
            page.get_by_test_id("undo").click()
            wait_for_search_after(page, before)
            assert canvas_png(page) != drawn
            assert page.get_by_test_id("redo").is_enabled()

            # Redo from the keyboard brings the stroke back exactly.
            before = search_count(page)
            page.keyboard.press("Control+y")
            wait_for_search_after(page, before)
            assert canvas_png(page) == drawn

            # Ctrl+Z undoes too.
            before = search_count(page)
            page.keyboard.press("Control+z")
            wait_for_search_after(page, before)
            assert canvas_png(page) != drawn

            # A label chip filters the results by class.
            chip_label = labels[0]
            before = search_count(page)
            page.get_by_test_id("label-chips").get_by_role("button", name=chip_label, exact=True).click()
            wait_for_search_after(page, before)
            assert set(page.get_by_test_id("result-label").all_inner_texts()) == {chip_label}

            # "Search in: photos only" over a sketch collection finds nothing; "both" brings the sketches back.
            before = search_count(page)
            page.get_by_test_id("domain-select").select_option("photo")
            wait_for_search_after(page, before)
            assert page.get_by_test_id("result-label").count() == 0
            before = search_count(page)
            page.get_by_test_id("domain-select").select_option("both")
            wait_for_search_after(page, before)
            assert set(page.get_by_test_id("result-label").all_inner_texts()) == {chip_label}

            # Clicking a result searches with it (query by example).
            before = search_count(page)
            first = page.get_by_test_id("result-item").first.get_by_role("button")
            example_id = first.get_attribute("data-image-id")
            first.click()
            wait_for_search_after(page, before)
            assert page.get_by_test_id("query-example").is_visible()
            assert example_id is not None
            assert f"#{example_id}" in page.get_by_test_id("query-example").inner_text()
            assert page.get_by_test_id("result-item").count() > 0

            try:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / "draw.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})  # a phone
                page.screenshot(path=str(SCREENSHOTS / "draw-phone.png"), full_page=True)
                page.set_viewport_size({"width": 1200, "height": 900})
            except OSError:
                pass  # a read-only checkout must not fail the test

            # A server error is shown as a message, not swallowed.
            page.route(
                "**/api/search/",
                lambda route: route.fulfill(
                    status=400, content_type="application/json", body='{"error": "not a recognised image"}'
                ),
            )
            page.get_by_test_id("search").click()
            page.get_by_test_id("error").wait_for(state="visible")
            assert "not a recognised image" in page.get_by_test_id("error").inner_text()
            page.unroute("**/api/search/")

            # Clear: blank canvas, no results, no history.
            page.get_by_test_id("clear").click()
            assert page.get_by_test_id("result-item").count() == 0
            assert canvas_png(page) == blank
            assert page.get_by_test_id("undo").is_disabled()
            assert "Draw something" in page.get_by_test_id("status").inner_text()
            assert page.get_by_test_id("error").is_hidden()
            assert not console_errors
            assert not failed_images, failed_images  # thumbnails are served by the media view
        finally:
            browser.close()
