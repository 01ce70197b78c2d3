"""The docs page in a real browser, with no internet: headless Chromium opens /docs on
the production gunicorn (`wsgi:app`, gunicorn.conf.py) and finds the API's
operations rendered, and "try it out" answering, with no request to another origin.

Chromium resolves no host name and reaches no address but loopback, as a browser
that reaches nothing but this API would, and every request the page made
is read from its DevTools network events (chromedriver's performance log); its
console must be clean (a Content-Security-Policy refusal is logged there). Needs
Debian's `chromium` and `chromium-driver` (.ci/run installs them); skipped without.
"""

import json
import shutil
from urllib.parse import urlsplit

import pytest
import redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.gunicorn_hosts import ProductionGunicorn
from tests.support.mongo import fresh_mongo_uri
from tests.support.ports import free_port

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Chromium and its driver: apt-get install chromium chromium-driver "
        "(.ci/run installs them)",
    ),
]
RESERVE = "operations-sales-post_api_v1_sales_reserve__product_id_"
HEALTHZ = "operations-health-get_healthz"
RENDER_TIMEOUT = 20


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    flush = redis.Redis.from_url(redis_server.url)
    flush.flushdb()  # no rate-limit counts left by other tests
    flush.close()
    workdir = tmp_path_factory.mktemp("docs-page")
    env = {"WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(workdir)}
    with (
        fresh_mongo_uri() as mongo_uri,
        ProductionGunicorn(redis_server.url, mongo_uri, workdir / "gunicorn.log", env) as server,
    ):
        yield server


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1600",
        # Offline but for this machine: no host name resolves, and any other address
        # goes through a proxy that is not there (loopback bypasses it).
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--proxy-server=http://127.0.0.1:{free_port()}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # Both paths given, so Selenium Manager (which would download a driver) never runs.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def open_docs(browser, server):
    """Load /docs afresh, emptying the logs, and wait until Swagger UI has drawn the
    reserve operation; return its element."""
    browser.get_log("browser")
    browser.get_log("performance")
    browser.get(server.url + "/docs")
    return WebDriverWait(browser, RENDER_TIMEOUT).until(
        lambda driver: driver.find_element(By.ID, RESERVE)
    )


def requested_urls(browser):
    """Every URL the page asked for since the logs were last read."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def origin(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_the_docs_page_renders_the_operations_from_this_origin_alone(
    server, browser, tmp_path_factory
):
    reserve = open_docs(browser, server)

    summary = reserve.find_element(By.CSS_SELECTOR, ".opblock-summary")
    assert "POST" in summary.text
    assert "/api/v1/sales/reserve/{product_id}" in summary.text
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/v1/auth/login", "/api/v1/orders", "/healthz"} <= paths
    browser.save_screenshot(str(tmp_path_factory.mktemp("screenshots") / "docs.png"))

    urls = requested_urls(browser)
    fetched = {urlsplit(url).path for url in urls}
    # The log holds what the page fetched (so an empty log cannot pass for a clean one).
    assert {"/docs", "/openapi.json"} <= fetched
    assert any(path.endswith("/swagger-ui-bundle.js") for path in fetched)
    outside = [url for url in urls if not url.startswith("data:") and origin(url) != server.url]
    assert outside == []
    assert browser.get_log("browser") == []


def test_try_it_out_calls_the_api_from_the_docs_page(server, browser):
    open_docs(browser, server)
    wait = WebDriverWait(browser, RENDER_TIMEOUT)
    healthz = browser.find_element(By.ID, HEALTHZ)

    healthz.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: healthz.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
    wait.until(lambda _: healthz.find_element(By.CSS_SELECTOR, ".execute")).click()
    answer = wait.until(
        lambda _: healthz.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response")
    )

    assert answer.find_element(By.CSS_SELECTOR, ".response-col_status").text == "200"
    body = answer.find_element(By.CSS_SELECTOR, "pre.microlight").text
    assert json.loads(body) == {"status": "ok"}
    assert server.url + "/healthz" in requested_urls(browser)
    assert browser.get_log("browser") == []
