"""The explore page in headless Chromium (slow suite): the documented ``attnguide explore
--model toyworld`` as a subprocess on a free loopback port, driven by Selenium like a user.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (dev extra);
skipped with the reason when one is absent. With ``ATTNGUIDE_EXPLORE_SCREENSHOT=PATH`` the page
after its generation is also saved there (how docs/explore.png is made, at more steps).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from attnguide.runs.recipe import load_recipe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOT = os.environ.get("ATTNGUIDE_EXPLORE_SCREENSHOT")
STEPS = 25 if SCREENSHOT else 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server():
    port = free_port()
    command = [str(Path(sys.executable).parent / "attnguide"), "explore", "--model", "toyworld", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/info", timeout=5) as response:
                    assert json.load(response)["model"] == "toyworld"
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {proc.stdout.read() if proc.stdout else ''}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Chromium and its driver: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install selenium (dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {condition}")


ALL_LOADED = """return Array.from(document.querySelectorAll(arguments[0]))
    .every(i => i.complete && i.naturalWidth > 0) && document.querySelectorAll(arguments[0]).length > 0"""
PIXELS = """const img = arguments[0], c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    c.getContext('2d').drawImage(img, 0, 0); return c.toDataURL();"""


def images_loaded(driver, selector, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not driver.execute_script(ALL_LOADED, selector):
        assert time.monotonic() < deadline, f"images {selector} did not load"
        time.sleep(0.2)


def test_a_user_parses_generates_and_steps_through_the_maps(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server + "/")
    wait(browser, "return document.body.dataset.ready === '1'", what="the page to start")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("a yellow star and a green heart")
    browser.find_element(By.ID, "parse-btn").click()
    wait(browser, "return document.querySelectorAll('#bindings-table tbody tr').length === 2", 120, "the bindings")
    assert "amod" in browser.find_element(By.ID, "arcs").text
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys(str(STEPS))
    names = [c.find_element(By.TAG_NAME, "strong").text for c in browser.find_elements(By.CSS_SELECTOR, ".method-card")]
    assert names == ["none", "syngen"]
    browser.find_element(By.ID, "generate-btn").click()
    wait(browser, "return document.querySelectorAll('.result-col').length === 2", 900, "the generation")
    images_loaded(browser, "img.final-img")
    images_loaded(browser, "img.map-img")
    assert [c.get_attribute("data-label") for c in browser.find_elements(By.CSS_SELECTOR, ".result-col")] == \
        ["none", "syngen"]
    assert browser.find_elements(By.CSS_SELECTOR, ".result-col[data-label=syngen] svg.loss-plot path")

    first_map = browser.find_element(By.CSS_SELECTOR, ".result-col[data-label=syngen] img.map-img")
    before_src, before_pixels = first_map.get_attribute("src"), browser.execute_script(PIXELS, first_map)
    slider = browser.find_element(By.ID, "step-slider")
    slider.send_keys(Keys.END)
    wait(browser, f"return document.getElementById('step-slider').value === '{slider.get_attribute('max')}'",
         what="the slider to move")
    images_loaded(browser, "img.map-img")
    assert first_map.get_attribute("src") != before_src
    assert browser.execute_script(PIXELS, first_map) != before_pixels, "the map did not change with the step"
    assert browser.find_element(By.ID, "step-label").text.startswith(slider.get_attribute("max"))

    href = browser.find_element(By.ID, "export-recipe").get_attribute("href")
    with urllib.request.urlopen(href) as response:
        text = response.read().decode()
    wait(browser, "return document.getElementById('recipe-text').textContent.length > 0", what="the recipe text")
    assert browser.find_element(By.ID, "recipe-text").text.strip() == text.strip()
    (tmp_path / "explore.yaml").write_text(text)
    loaded = load_recipe(str(tmp_path / "explore.yaml"))
    assert loaded.prompts == ["a yellow star and a green heart"] and loaded.recipe.sampling.steps == STEPS
    if SCREENSHOT:
        slider.send_keys(Keys.HOME)
        for _ in range(STEPS // 2):
            slider.send_keys(Keys.ARROW_RIGHT)
        images_loaded(browser, "img.map-img")
        browser.save_screenshot(SCREENSHOT)
