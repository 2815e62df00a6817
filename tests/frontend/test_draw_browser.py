"""The drawing page in a real browser: Debian's chromium driven by Playwright, against pytest-django's live server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


SEARCH_DONE = (
    "n => Number(document.body.dataset.searchCount || 0) > n"
    " && document.getElementById('results').dataset.state === 'done'"
)
SETTLE_MS = 400  # longer than the page's LIVE_DEBOUNCE_MS (250): a stroke's search is due by then


def wait_for_search_after(page: Any, count: int) -> None:
    """Wait for a search after the ``count``-th to finish, then for the page to settle.

    On a slow machine a search can fire between two strokes of one drawing and finish before the last stroke's
    debounced search starts: so wait again while a search that was due has run since.
    """
    page.wait_for_function(SEARCH_DONE, arg=count, timeout=15_000)
    while True:
        settled = search_count(page)
        page.wait_for_timeout(SETTLE_MS)
        page.wait_for_function(SEARCH_DONE, arg=settled - 1, timeout=15_000)
        if search_count(page) == settled:
            return


def canvas_png(page: Any) -> str:
    return str(page.evaluate("document.getElementById('sketch').toDataURL('image/png')"))


@contextmanager
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()


def test_draw_search_undo_example_and_clear(live_server: Any, live_index: BuiltIndex) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        console_errors: list[str] = []
        page.on("pageerror", lambda error: console_errors.append(str(error)))
        failed_images: list[str] = []
        page.on("response", lambda r: failed_images.append(r.url) if "/media/" in r.url and r.status != 200 else None)
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

        # "Search in: sketches only" keeps the filtered sketches; "both" too (photos only: see the test below).
        for domain in ("sketch", "both"):
            before = search_count(page)
            page.get_by_test_id("domain-select").select_option(domain)
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
        assert page.get_by_test_id("error").inner_text() == "Not a recognised image"  # a 4xx: as the server says
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


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1200, "height": 900}
# Long one-word labels as TU-Berlin has them, and a long collection name: they must never break mid-word.
LONG_LABELS = ["wheelbarrow", "loudspeaker", "screwdriver", "flying saucer"]


def with_long_labels(route: Any) -> None:
    response = route.fetch()
    if response.status != 200:
        route.fulfill(response=response)
        return
    body = response.json()
    for i, hit in enumerate(body["results"]):
        hit["label"] = LONG_LABELS[i % len(LONG_LABELS)]
        hit["collection"] = "tu-berlin-250-sketches"
    route.fulfill(response=response, json=body)


def line_counts(page: Any, testid: str) -> list[int]:
    """How many lines each element's text takes (a word broken across two lines makes 2)."""
    return list(
        page.evaluate(
            """testid => [...document.querySelectorAll(`[data-testid="${testid}"]`)].map((el) => {
                const range = document.createRange();
                range.selectNodeContents(el);
                return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size;
            })""",
            testid,
        )
    )


def in_viewport(box: dict[str, float] | None, viewport: dict[str, int]) -> bool:
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_results_show_while_drawing_with_whole_labels_and_chips_that_say_what_they_are(
    live_server: Any, live_index: BuiltIndex, viewport: dict[str, int]
) -> None:
    phone = viewport["width"] < 900
    with chromium() as browser:
        page = browser.new_page(viewport=viewport)
        console_errors: list[str] = []
        page.on("pageerror", lambda error: console_errors.append(str(error)))
        page.route("**/api/search/", with_long_labels)
        page.goto(live_server.url + "/")
        page.wait_for_function("document.getElementById('index-select').options.length >= 2")

        # The index holds only sketches: "photos only" cannot find anything, and says so instead of searching.
        photo_option = page.locator("#domain-select option[value='photo']")
        assert photo_option.evaluate("option => option.disabled")
        assert "none in this index" in photo_option.inner_text()
        assert not page.locator("#domain-select option[value='sketch']").evaluate("option => option.disabled")

        box = page.get_by_test_id("sketch-canvas").bounding_box()
        assert box is not None
        # One stroke, so one search: a later answer would replace the predictions injected below.
        draw_stroke(page, box, [(0.2, 0.2), (0.5, 0.35), (0.8, 0.2), (0.7, 0.75), (0.3, 0.5), (0.4, 0.8)])
        wait_for_search_after(page, 0)
        assert page.evaluate("window.scrollY") == 0  # nothing below was needed to see the results

        if phone:
            # The results strip right under the canvas: its first thumbnails are on screen while drawing.
            first = page.get_by_test_id("strip-item").first
            assert in_viewport(first.bounding_box(), viewport), first.bounding_box()
            assert "similar image" in page.get_by_test_id("strip-status").inner_text()
            assert page.get_by_test_id("strip-more").is_visible()
            assert set(line_counts(page, "strip-label")) == {1}
        else:
            # Beside the canvas: the results list itself, no strip.
            assert page.get_by_test_id("results-strip").is_hidden()
            assert page.get_by_test_id("strip-more").is_hidden()
            first = page.get_by_test_id("result-item").first
            first_box = first.bounding_box()
            assert in_viewport(first_box, viewport), first_box
            assert first_box is not None
            assert first_box["x"] > box["x"] + box["width"]  # beside the canvas
        try:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"draw-while-drawing-{'phone' if phone else 'desktop'}.png"))
        except OSError:
            pass  # a read-only checkout must not fail the test
        labels = page.get_by_test_id("result-label")
        assert set(labels.all_inner_texts()) <= set(LONG_LABELS)
        assert set(line_counts(page, "result-label")) == {1}  # cut with an ellipsis if need be, never broken

        # The chips built from the results are a class filter, and say so; classifier guesses look different.
        chips = page.get_by_test_id("label-chips")
        assert chips.inner_text().startswith("Filter by class")
        guesses = "[{label: 'wheelbarrow', probability: 0.93}, {label: 'cat', probability: 0.06}, "
        guesses += "{label: 'sun', probability: 0.004}]"
        page.evaluate(f"window.sketchsearch.renderPredictions({guesses})")
        predictions = page.get_by_test_id("predictions")
        assert predictions.is_visible()
        assert "The classifier suggests" in predictions.inner_text()
        assert page.get_by_test_id("prediction-chip").all_inner_texts() == ["wheelbarrow 93%", "cat 6%"]  # not "sun 0%"
        suggestion = page.get_by_test_id("prediction-chip").first
        style = "el => { const s = getComputedStyle(el); return [s.borderStyle, s.backgroundColor, s.fontStyle]; }"
        assert suggestion.evaluate(style) != chips.get_by_test_id("label-chip").first.evaluate(style)

        # A drawing rubbed out entirely is blank: the server says nothing was drawn, and the page shows it.
        page.get_by_test_id("eraser").click()
        before = search_count(page)
        page.evaluate("window.sketchsearch.clear()")
        page.evaluate("window.scrollTo(0, 0)")
        box = page.get_by_test_id("sketch-canvas").bounding_box()
        assert box is not None
        draw_stroke(page, box, [(0.3, 0.3), (0.6, 0.6)])
        message = page.get_by_test_id("strip-status" if phone else "error")
        page.wait_for_function(
            "id => document.querySelector(`[data-testid=\"${id}\"]`).textContent.includes('othing was drawn')",
            arg="strip-status" if phone else "error",
            timeout=15_000,
        )
        assert search_count(page) == before  # an error, not a result
        assert message.inner_text() == "Nothing was drawn: the image is blank"
        assert in_viewport(message.bounding_box(), viewport)
        assert not console_errors
