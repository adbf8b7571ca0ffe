"""The demo's web page end to end: a real server process on a free local port, driven in headless Chromium
(Debian's chromium + chromedriver, through Selenium) and through gradio_client.

The browser test fails (never skips) without /usr/bin/chromium and /usr/bin/chromedriver: install them with
`apt-get install -y chromium chromium-driver` (.ci/run does). SIT_VQA_UPDATE_SCREENSHOT=1 also writes the
page's screenshot to docs/demo.png; SIT_VQA_DEMO_CHECKPOINT=DIR serves DIR instead of the few-step
quickstart run (a full quickstart run makes a more telling screenshot).
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from sit_vqa.apps.demo import VqaDemo
from sit_vqa.modeling.generation import GenerationSettings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "sample" / "val2014"
FIRST_IMAGE, SECOND_IMAGE = SAMPLES / "COCO_val2014_000000325422.jpg", SAMPLES / "COCO_val2014_000000373587.jpg"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
STARTUP_SECONDS, ANSWER_SECONDS = 300, 180  # generous: CI shares two cores (these are limits, not assertions)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(quickstart_run):
    return Path(os.environ.get("SIT_VQA_DEMO_CHECKPOINT") or quickstart_run)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """The page served by `python -m sit_vqa.apps.demo --serve` (a subprocess); yields (url, log path)."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "sit_vqa.apps.demo", "--checkpoint", str(checkpoint), "--serve", "--port", str(port)],
            stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=60)
    uploads = next(line.split()[4] for line in log.read_text().splitlines() if line.startswith("uploads are kept in"))
    assert not Path(uploads).exists(), "the upload directory must be removed when the server stops"


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the demo server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the demo server did not answer within {STARTUP_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def api(checkpoint):
    """The Python API on the same checkpoint: what the page must show."""
    return VqaDemo.load(checkpoint)


@pytest.fixture
def browser():
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def field(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea").get_attribute("value")


def ask_in_page(driver, image: Path, question: str) -> None:
    from selenium.webdriver.common.by import By

    removes = driver.find_elements(By.CSS_SELECTOR, "#image button[aria-label='Remove Image']")
    if removes:
        removes[0].click()
    driver.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(image))
    box = driver.find_element(By.CSS_SELECTOR, "#question textarea")
    box.clear()
    box.send_keys(question)
    time.sleep(1)  # let the upload finish before the click sends the image
    driver.find_element(By.CSS_SELECTOR, "#ask").click()


def wait_for_reply(driver, expected) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, ANSWER_SECONDS).until(
        lambda d: (field(d, "description"), field(d, "answer")) == (expected.description or "", expected.answer),
        message=f"the page never showed {expected}",
    )


def requested_hosts(driver) -> set[str]:
    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            hosts.add(urlparse(message["params"]["request"]["url"]))
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    hosts.update(urlparse(name) for name in resources)
    return {f"{u.scheme}://{u.hostname}" for u in hosts if u.scheme not in ("data", "blob")}


def test_page_describes_and_answers_shows_errors_and_keeps_serving(server, api, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#question textarea"))
    assert "Bundled sample images" in browser.find_element(By.TAG_NAME, "body").text

    question = "What color is the shape?"
    ask_in_page(browser, FIRST_IMAGE, question)
    wait_for_reply(browser, api.ask(FIRST_IMAGE, question))
    browser.save_screenshot(str(tmp_path / "demo.png"))
    if os.environ.get("SIT_VQA_UPDATE_SCREENSHOT"):
        browser.save_screenshot(str(REPO / "docs" / "demo.png"))

    not_an_image = tmp_path / "holiday.jpg"
    not_an_image.write_text("this is text, not a JPEG")
    ask_in_page(browser, not_an_image, question)
    WebDriverWait(browser, ANSWER_SECONDS).until(
        lambda d: "holiday.jpg is not an image file PIL can read" in d.find_element(By.TAG_NAME, "body").text)

    second = "How many shapes are there?"
    ask_in_page(browser, SECOND_IMAGE, second)
    wait_for_reply(browser, api.ask(SECOND_IMAGE, second))
    log = server[1].read_text()
    assert "request refused: holiday.jpg is not an image file" in log and "Traceback" not in log, log

    foreign = {host for host in requested_hosts(browser) if urlparse(host).hostname not in LOCAL_HOSTS}
    assert not foreign, f"the page made requests off this machine: {sorted(foreign)}"


def test_gradio_client_calls_the_same_server(server, api, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, _ = server
    client = Client(url, verbose=False)
    settings = ("auto", 24, 1, False, 1.0, 1.0, 1.0)  # prompt, max new tokens, beams, sample, temperature, ...
    description, answer, raw = client.predict(handle_file(str(FIRST_IMAGE)), "Is it red?", *settings, api_name="/ask")
    expected = api.ask(FIRST_IMAGE, "Is it red?", options=GenerationSettings(max_new_tokens=24))
    assert (description, answer, raw) == (expected.description or "", expected.answer, expected.raw)

    not_an_image = tmp_path / "scan.png"
    not_an_image.write_bytes(b"%PDF-1.4 not a png")
    with pytest.raises(AppError, match="scan.png is not an image file PIL can read"):
        client.predict(handle_file(str(not_an_image)), "Is it red?", *settings, api_name="/ask")
    with pytest.raises(AppError, match="the question is empty"):
        client.predict(handle_file(str(FIRST_IMAGE)), "  ", *settings, api_name="/ask")
    again = client.predict(handle_file(str(FIRST_IMAGE)), "Is it red?", *settings, api_name="/ask")
    assert again == (description, answer, raw)
