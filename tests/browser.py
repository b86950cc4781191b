"""Playwright with Debian's chromium: no browser download (impossible on these machines)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

#: Where the browser is: VIDEOSVC_CHROMIUM, else `chromium` on PATH (Debian's package).
CHROMIUM = os.environ.get("VIDEOSVC_CHROMIUM") or shutil.which("chromium") or ""
#: Headless in a sandbox-less container, and quiet: a closed network refuses its background calls.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM, reason="no chromium: apt-get install chromium (CI installs it), or set VIDEOSVC_CHROMIUM"
)


@contextlib.asynccontextmanager
async def launch_page() -> AsyncIterator[Any]:
    """Playwright's async API, not pytest-playwright's sync one: the sync API holds an event loop
    for the whole session, and every asyncio test after it would fail."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            yield await context.new_page()
        finally:
            await browser.close()
