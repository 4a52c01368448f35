"""A real browser for the status page tests: Debian's chromium, driven through its chromedriver by selenium.

Imported by tests as `browserlib` (the root pyproject puts tests/ on the path). `browser` is a fixture: a
headless chromium with a fresh profile, whose console messages the tests read (`console_errors`). Every
process it starts (chromedriver, and chromium with its helpers, found among chromedriver's descendants) is
ended by its PID at teardown, even when the test fails. scripts/system-deps installs chromium and
chromium-driver; without them the tests fail, naming what is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clusterlib import children_of, pid_alive

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1200,1000")  # fmt: skip


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        for kid in children_of(todo.pop()):
            found.append(kid)
            todo.append(kid)
    return found


@pytest.fixture
def browser() -> Iterator[Any]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            pytest.fail(
                f"{path} is missing: install Debian's {package} (bash scripts/system-deps does, as root)"
            )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ppft-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    pids: list[int] = []
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        assert service.process is not None
        pids.append(service.process.pid)
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        if service.process is not None and service.process.pid not in pids:
            pids.append(service.process.pid)
        for pid in list(pids):
            pids += _descendants(pid)  # chromium and its helpers, before their parent goes
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        for pid in pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if service.process is not None:
            try:
                service.process.wait(10)
            except Exception:
                pass
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    """The console's errors (uncaught exceptions, failed loads, console.error) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.execute_script(f"return document.getElementById({element_id!r}).textContent"))


def wait_for(
    driver: Any, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "the page"
) -> None:
    """Poll `predicate` (which reads the page) until true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; console: {console_errors(driver)}")
        time.sleep(0.05)


def card(driver: Any, label: str) -> str:
    """The number a card of the page shows under `label` ("jobs done", "workers", ...)."""
    return str(
        driver.execute_script(
            "for (const c of document.querySelectorAll('#cards .card')) {"
            "  if (c.querySelector('span').textContent === arguments[0])"
            "    return c.querySelector('b').textContent;"
            "} return null;",
            label,
        )
    )
