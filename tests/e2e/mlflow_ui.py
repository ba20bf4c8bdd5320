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
