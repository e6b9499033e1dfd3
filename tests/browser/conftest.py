"""Fixtures for the web dashboard in a real headless Chromium against a real local stack.

The stack is ``skymesh local up`` as a child process (:class:`tests.integration.test_local_stack.Stack`),
serving the dashboard that ``make web`` built into ``web/dist``; the browser is Debian's
``chromium`` (``make deps`` installs it) driven by Playwright, whose own browser download is
never used. Every wait is one of Playwright's bounded waits on something the page shows.

Screenshots go to ``build/screenshots/dashboard/`` (git-ignored): each page at a desktop's
and at a phone's width, for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skymesh.local.dashboard import DEFAULT_DIST, is_built
from tests.integration.test_local_stack import running_stack

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build" / "screenshots" / "dashboard"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}  # a common phone's CSS width
WAIT_MS = 15_000  # bound of each wait on the page; only a failing test waits it out
# What the machine's closed network needs (connections to Google's hosts are refused one by
# one otherwise); Playwright itself adds --headless and a fresh, temporary --user-data-dir.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    found = os.environ.get("SKYMESH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium on this machine: `make deps` installs Debian's (apt-get install chromium)",
                    pytrace=False)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright. Per module, not per session: while the
    sync API is open its event loop counts as the thread's running loop, and pyroute2 (the agent's
    netlink, in the tests that run after these) would then run its calls on it and fail."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: `make deps` installs it (pyproject dev extra)",
                    pytrace=False)
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    shutil.rmtree(SHOTS, ignore_errors=True)  # the artifacts are this run's screenshots only
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    """``skymesh local up`` in a fresh home on free ports; yields its ``local.json``."""
    if not is_built(DEFAULT_DIST):
        pytest.fail(f"the dashboard is not built ({DEFAULT_DIST}/index.html is missing): run `make web`",
                    pytrace=False)
    with running_stack("skymesh-browser-") as info:
        yield info


@pytest.fixture
def page(browser: Any, stack: dict[str, Any]) -> Iterator[Any]:
    """A new tab in its own browser context (nothing shared with another test), at desktop width,
    allowed to use the clipboard on the dashboard's origin."""
    context = browser.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack["api_url"])
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        yield tab
    finally:
        context.close()
    assert not problems, problems  # an uncaught exception in the app is a bug even if the test passed


AXE = REPO / "web" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core (a devDependency of web/, installed by `make web`): WCAG checks inside the page."""


def accessibility_problems(page: Any) -> list[str]:
    """What axe-core finds against WCAG 2.x A and AA on the page as shown: controls without a
    label a screen reader can read, too little contrast, duplicate ids, and so on."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: `make web` installs web/'s packages (npm ci)", pytrace=False)
    found = page.evaluate(AXE.read_text() + """
        ;axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})
           .then(r => r.violations.map(v =>
             `${v.id}: ${v.help} (${v.nodes.map(n => n.target.join(" ")).join(", ")})`))""")
    return list(found)


def shoot(page: Any, name: str) -> list[Path]:
    """Screenshots of what ``page`` shows, at a desktop's and a phone's width (then back to desktop).

    At the phone's width the page must fit: nothing wider than the screen (no sideways scrolling);
    at both, axe-core finds nothing against WCAG 2.1 A/AA (:func:`accessibility_problems`).
    """
    SHOTS.mkdir(parents=True, exist_ok=True)
    out = []
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        path = SHOTS / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        out.append(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {label} width is {overflow}px wider than the screen (see {path})"
        problems = accessibility_problems(page)
        assert not problems, f"{name} at {label} width (see {path}):\n" + "\n".join(problems)
    page.set_viewport_size(DESKTOP)
    return out
