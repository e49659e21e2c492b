"""Shared pytest setup: headless Chromium options for the dash[testing] browser tests."""

import shutil


def pytest_setup_options():
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1500,1100"):
        options.add_argument(flag)
    if shutil.which("chromium"):
        options.binary_location = shutil.which("chromium")
    return options
