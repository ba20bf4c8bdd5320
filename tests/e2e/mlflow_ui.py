"""Read the MLflow UI as a person sees it: headless Debian Chromium driven by Playwright.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (Debian's
package, installed by ``make test``) with the flags this closed network needs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google's hosts, which
# this machine's closed network refuses; the rest keep a root, headless start quiet.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_chromium() -> str:
    """The browser's path; a missing one skips locally and fails under CI (which installs it)."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    pytest.skip("Chromium is not installed (make test installs it)")


def versions_with_alias_in_ui(ui_url: str, model_name: str, alias: str, timeout_s: float = 60,
                              screenshot: str | Path | None = None) -> list[str]:
    """The versions whose row in the model's registry page shows ``@ alias``, as rendered.

    Opens ``{ui_url}/#/models/{model_name}``, waits for the versions table, finds the
    "Aliases" column from its header and reads that cell of every version row: the DOM
    text the page shows, not the REST API behind it.
    """
    from playwright.sync_api import sync_playwright

    browser_path = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(f"{ui_url}/#/models/{model_name}")
            header = page.get_by_role("row").filter(has=page.get_by_role("columnheader", name="Aliases"))
            header.first.wait_for()
            # A version row links to its own page: wait until the table has rendered them.
            page.locator(f'a[href*="#/models/{model_name}/versions/"]').first.wait_for()
            names = [c.inner_text().strip() for c in header.first.get_by_role("columnheader").all()]
            version_col, alias_col = names.index("Version"), names.index("Aliases")
            found = []
            for row in page.get_by_role("row").all():
                cells = row.get_by_role("cell").all()
                if len(cells) != len(names):
                    continue
                version = cells[version_col].inner_text().strip().removeprefix("Version").strip()
                chips = cells[alias_col].inner_text().split()
                # Each alias renders as a chip "@ name".
                aliases = {chips[i + 1] for i, token in enumerate(chips[:-1]) if token == "@"}
                if alias in aliases:
                    found.append(version)
            if screenshot:
                page.screenshot(path=str(screenshot), full_page=True)
            return sorted(found, key=int)
        finally:
            browser.close()


def version_descriptions_in_ui(ui_url: str, model_name: str, versions: list[str], timeout_s: float = 60,
                               screenshot: str | Path | None = None) -> dict[str, dict]:
    """What a person reads in the Description of each version's registry page, as rendered.

    For each version, opens ``{ui_url}/#/models/{model_name}/versions/{version}`` and reads
    the rendered description: ``text`` (its visible text), ``headings`` (the text of every
    h1-h6 in it), ``rules`` (how many horizontal rules), ``tables``, ``links`` (``[(text,
    href)]``) and ``card_text``: the visible text of the page its ``MODEL_CARD.md`` link
    opens (the run's artifact viewer), or None when it has no such link. ``screenshot``
    saves the first version's page.
    """
    from playwright.sync_api import sync_playwright

    browser_path = require_chromium()
    found: dict[str, dict] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(timeout_s * 1000)
            for version in versions:
                page.goto(f"{ui_url}/#/models/{model_name}/versions/{version}")
                page.get_by_role("heading", name=f"Version {version}").first.wait_for()
                note = page.get_by_test_id("note-editor-preview-content").first
                note.wait_for()
                if screenshot and not found:
                    page.screenshot(path=str(screenshot), full_page=True)
                links = [(a.inner_text().strip(), a.get_attribute("href") or "")
                         for a in note.get_by_role("link").all()]
                info = {
                    "text": note.inner_text().strip(),
                    "headings": [h.inner_text().strip() for h in note.locator("h1, h2, h3, h4, h5, h6").all()],
                    "rules": note.locator("hr").count(),
                    "tables": note.locator("table").count(),
                    "links": links,
                    "card_text": None,
                }
                card = next((a for a in note.get_by_role("link").all() if a.inner_text().strip() == "MODEL_CARD.md"),
                            None)
                if card is not None:
                    # The link opens in a new tab: read the card there, in the run's artifact viewer.
                    with page.context.expect_page() as opened:
                        card.click()
                    viewer = opened.value
                    viewer.set_default_timeout(timeout_s * 1000)
                    viewer.get_by_text("model-index").first.wait_for()
                    info["card_text"] = viewer.locator("body").inner_text()
                    viewer.close()
                found[version] = info
            return found
        finally:
            browser.close()
