"""The upload page in a real headless Chromium: a photo gets its labels, a non-image its error."""

from __future__ import annotations

import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.images import PHOTO_PLAUSIBLE_LABELS, photo_bytes
from tests.integration.conftest import MODELS_PREFIX

pytestmark = pytest.mark.integration
# Headless, and quiet: this machine's network is closed, so no background connections.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1100,900"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        # Failed, never skipped, as the Prometheus tests: a suite that passed without its browser
        # test would say nothing about the page.
        pytest.fail("no Chromium here: `apt-get install -y chromium chromium-driver` (.ci/run installs it)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(executable_path=chromedriver), options=options)
    yield driver
    driver.quit()


def upload(browser, path) -> None:
    browser.find_element(By.ID, "file").send_keys(str(path))


def test_a_photo_gets_its_top_five_labels_and_a_non_image_its_error(service, browser, tmp_path):
    photo, text = tmp_path / "photo.jpg", tmp_path / "notes.txt"
    photo.write_bytes(photo_bytes("JPEG"))
    text.write_text("not an image")
    browser.get(service.url("/"))

    upload(browser, photo)
    WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#labels li")) == 5)
    labels = [item.text.split(" — ")[0] for item in browser.find_elements(By.CSS_SELECTOR, "#labels li")]
    meta = browser.find_element(By.ID, "meta").text
    browser.save_screenshot(str(tmp_path / "page-photo.png"))
    assert labels[0] in PHOTO_PLAUSIBLE_LABELS, labels
    assert browser.find_element(By.ID, "preview").is_displayed()
    assert " ms · " in meta and ("from the cache" in meta or "computed by the model" in meta)

    upload(browser, text)
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "error").text)
    browser.save_screenshot(str(tmp_path / "page-error.png"))
    # The browser declares the file text/plain, which the service refuses before reading it.
    assert browser.find_element(By.ID, "error").text == "Content-Type 'text/plain' can never be an image"
    assert browser.find_elements(By.CSS_SELECTOR, "#labels li") == []

    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.startswith(service.base_url) for url in loaded), loaded


def test_api_docs_render_offline(service, browser):
    browser.get(service.url("/docs"))
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".route"))
    routes = browser.find_element(By.ID, "routes").text
    assert "/v1/classify" in routes and "/v2/models/{model}/infer" in routes


def test_the_chosen_model_classifies_the_upload(service, browser, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_bytes("JPEG", size=(300, 200)))
    browser.get(service.url(MODELS_PREFIX + "/"))
    WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) == 3)
    choice = Select(browser.find_element(By.ID, "model"))
    assert choice.first_selected_option.get_attribute("value") == "efficientnet-lite0", "the default first"
    choice.select_by_value("efficientnet-lite2")
    upload(browser, photo)
    WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#labels li")) == 5)
    assert browser.find_element(By.ID, "meta").text.endswith("· efficientnet-lite2")
