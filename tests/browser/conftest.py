"""Browser tests: one real JupyterLab and one headless Chromium for the whole folder.

Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM_PATH), driven by Playwright for
Python; Playwright's own browser download is never used. Without either, every test here is
skipped with the reason. Each test gets a fresh 1400x900 page; its screenshot is written to
``tests/browser/artifacts/`` when it ends (``...-failed.png`` with the browser console when it
failed), next to the server's log, ``jupyterlab.log``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

from .lab import PAGE_HELPERS, JupyterLab, Notebook

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # containers often give /dev/shm 64 MB; Chromium uses /tmp
    # Nothing but the test server resolves: a request that would leave the machine fails.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1400, "height": 900}


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless Chromium")


@pytest.hookimpl(tryfirst=True)  # before -m selects, so -m "not slow" leaves these out
def pytest_collection_modifyitems(config, items):
    reason = _missing()
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# Package scope: started by the first browser test, stopped after the last one, so the
# server and the browser do not sit on the CPU while the rest of the suite runs.
@pytest.fixture(scope="package")
def lab(tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.iterdir():  # what is there is the last run's, and only that
        if old.name != ".gitignore":
            old.unlink()
    server = JupyterLab.start(tmp_path_factory.mktemp("lab"), ARTIFACTS / "jupyterlab.log")
    yield server
    server.stop()


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # A view waits for the kernel, which may be busy: 5 s, the default, is tight on CI.
    expect.set_options(timeout=15_000)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, lab, request):
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(PAGE_HELPERS)
    context.set_default_timeout(30_000)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    yield page
    failed = any(getattr(getattr(request.node, f"report_{when}", None), "failed", False)
                 for when in ("setup", "call"))
    name = re.sub(r"[^\w.-]+", "_", f"{request.node.module.__name__.split('.')[-1]}-"
                                   f"{request.node.name}") + ("-failed" if failed else "")
    try:
        page.screenshot(path=ARTIFACTS / f"{name}.png")
        if failed:
            (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
    finally:
        context.close()
        lab.shutdown_kernels()


@pytest.fixture
def open_notebook(page, lab):
    """open_notebook("x.ipynb") -> Notebook open in this test's page, its kernel idle."""

    def open_(path: str) -> Notebook:
        return Notebook(page, lab, path).open()

    return open_
