"""A real browser for tests: headless Chromium driven through Selenium and Debian's chromedriver.

Why Selenium over speaking the Chrome DevTools protocol ourselves: WebDriver is a W3C standard
with element queries, typing, clicking and screenshots built in, so a test reads like what a
person does and this module stays small; Debian's ``chromium-driver`` is built from the same
source as its ``chromium``, so the two always match; the Python bindings are one pip package
(the ``dev`` extra). The driver's path is given explicitly, so Selenium Manager (which would try
to download a driver) never runs.

Use it from any test module (``.ci/run`` installs Chromium and its driver):

    from browser import browser  # noqa: F401  (the fixture)

    def test_page(browser):
        browser.open("http://127.0.0.1:8000/")            # or a file:// URL of a static page
        browser.wait_for("body[data-ready]")
        browser.type("#q", "vitamin D")
        rows = browser.attributes("li.hit", "data-docid")
        assert rows[:1] == ["doc1"]                         # what the page must show

When Chromium, chromedriver or selenium is missing, the fixture FAILS (never skips) with the
command that installs it: a missing browser must not make a green CI.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
INSTALL = "apt-get install -y chromium chromium-driver"


def _which(names: tuple[str, ...]) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


class Browser:
    """One headless Chromium window (1200 x 900). Waits are explicit: ``wait_for`` a selector."""

    def __init__(self, timeout: float = 20.0) -> None:
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            pytest.fail("the browser tests need selenium: pip install -e '.[dev]'", pytrace=False)
        chromium, driver = _which(BROWSERS), _which(DRIVERS)
        if chromium is None or driver is None:
            missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", driver)) if p is None)
            pytest.fail(f"the browser tests need headless Chromium: {missing} not found; {INSTALL}",
                        pytrace=False)
        self._profile = tempfile.mkdtemp(prefix="retriever-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--no-proxy-server", "--window-size=1200,900",
                    f"--user-data-dir={self._profile}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        self.driver.set_page_load_timeout(timeout)
        self.timeout = timeout

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait_for(self, css: str, timeout: float | None = None):
        """The first element matching ``css``, once there is one (TimeoutException otherwise)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        wait = WebDriverWait(self.driver, self.timeout if timeout is None else timeout)
        return wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))

    def find_all(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def type(self, css: str, text: str) -> None:
        box = self.wait_for(css)
        box.clear()
        box.send_keys(text)

    def click(self, css: str) -> None:
        self.wait_for(css).click()

    def select(self, css: str, value: str) -> None:
        """Choose the option with ``value`` in a ``<select>``."""
        from selenium.webdriver.support.select import Select

        Select(self.wait_for(css)).select_by_value(value)

    def texts(self, css: str) -> list[str]:
        return [e.text for e in self.find_all(css)]

    def attributes(self, css: str, name: str) -> list[str | None]:
        return [e.get_attribute(name) for e in self.find_all(css)]

    def errors(self) -> list[str]:
        """The page's console errors (a JavaScript exception, a failed request) since the last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(path)):
            raise OSError(f"{path}: the browser could not write the screenshot")
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (about 1 s to start); each test opens its page."""
    with Browser() as b:
        yield b
