"""The demo in a real headless Chromium: upload a texture mosaic, segment, see K regions; a corrupt upload shows an
error and the page keeps working. A screenshot is kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from demo_fixture import ARTIFACTS, corrupt_png, demo_server  # noqa: F401  (fixtures)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000  # a loaded 2-core CI machine; a run takes seconds when the machine is idle

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium); .ci/run does")


@pytest.fixture(scope="module")
def page(demo_server):  # noqa: F811
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(demo_server[1])
        yield page
        browser.close()


def _segment(page, image: Path, k: str) -> None:
    clear = page.locator("#upload button[aria-label=Clear]")
    if clear.count():  # a file is shown: the upload area comes back once it is cleared
        clear.click()
    # Gradio's upload area first renders a file input without `accept`, then replaces it with one accepting images;
    # its change handler reads whichever input is current, so files set on the first one would be dropped.
    page.locator("#upload input[type=file][accept]").set_input_files(str(image))
    # The uploaded file's row: it shows the name as two spans ("mosaic" ".png"), so the name is matched by the row's
    # aria-label. (Matching the text "mosaic.png" only ever found the progress line shown *while* uploading, and
    # missed it whenever the upload finished between two polls.)
    page.locator("#upload").get_by_label(image.name, exact=True).wait_for()
    page.locator("#k input").click()
    page.get_by_role("option", name=k, exact=True).click()
    page.locator("#run").click()


def _wait_for_regions(page, k: int) -> None:
    page.locator("#status").get_by_text(f"{k} regions found by classical").wait_for()
    grid = page.locator("#table [role=grid]")
    assert grid.get_attribute("aria-rowcount") == str(k + 1)  # header + one row per region
    assert page.locator("#table .virtual-row").count() == k
    assert page.locator("#regions img").count() >= 1
    legend = page.locator("#regions .legend-item")
    assert legend.count() == k
    assert legend.nth(0).inner_text().startswith("1.")


def test_upload_segment_error_and_recover(page, demo_server, corrupt_png, tmp_path):  # noqa: F811
    from detecture.demo.examples import mosaic_three
    from PIL import Image

    mosaic = tmp_path / "mosaic.png"
    Image.fromarray(mosaic_three(384)[0]).save(mosaic)
    _segment(page, mosaic, "3")
    _wait_for_regions(page, 3)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-classical.png"), full_page=True)

    _segment(page, corrupt_png, "2")
    page.get_by_text("not a readable image").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "demo-corrupt-upload.png"), full_page=True)

    shutil.copy(mosaic, tmp_path / "again.png")
    _segment(page, tmp_path / "again.png", "2")
    _wait_for_regions(page, 2)
