"""The dashboard, the quick-look endpoint and the self-hosted /docs, in a real headless Chromium.

The shared cluster (real uvicorn, two real workers, real Redis, tiny model, auth on). The browser
is Debian's `chromium` driven by Selenium through Debian's `chromedriver` (no browser download);
its host resolver fails every name, so a page that needed a CDN would not render. The browser
tests skip when chromium is absent; the HTTP tests run everywhere.

The dashboard test saves a screenshot under `NOWCAST_SCREENSHOT_DIR` (default: the test's tmp
folder) and prints its path.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from matplotlib.image import imread

from tests.support.cluster import (
    KEY_A,
    KEY_B,
    RADAR_64,
    Cluster,
    submit,
    wait_status,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUICKLOOK_PRODUCTS = ("mean", "member", "probability")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Selenium + Debian's chromedriver) that can reach only 127.0.0.1."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            "needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
            "/usr/bin/chromedriver): `apt-get install chromium chromium-driver` (.ci/run does)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--window-size=1200,1500",
        # every host name fails to resolve: a CDN reference would leave the page blank
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    )
    # records what the page's Content-Security-Policy refused to load (never sent)
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.refusedByPolicy = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (event) => window.refusedByPolicy.push(event.blockedURI));"
        },
    )
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, timeout_s: float, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(condition, message=what)


def _loaded_images(driver: Any) -> dict[str, int]:
    """naturalWidth of each quick-look image (0 while not loaded)."""
    return driver.execute_script(
        "const widths = {};"
        "for (const img of document.querySelectorAll('#quicklook img')) {"
        "  widths[img.dataset.product] = img.complete ? img.naturalWidth : 0; }"
        "return widths;"
    )


def _foreign_resources(driver: Any, origin: str) -> list[str]:
    """URLs the page fetched from anywhere but the API.

    Requests that the page's Content-Security-Policy refused still get a resource entry, but
    they never leave the browser (ReDoc's bundle asks for its vendor's logo): not counted.
    """
    urls = driver.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name);"
    )
    refused = set(driver.execute_script("return window.refusedByPolicy || [];"))
    return [url for url in urls if not url.startswith(origin) and url not in refused]


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NOWCAST_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_dashboard_submits_watches_and_shows_quicklook(
    cluster: Cluster, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{cluster.url}/dashboard")
    # auth is on and no key is set yet: the page says so instead of showing an empty list
    _wait(
        browser,
        20,
        lambda d: "Enter your API key" in d.find_element(By.ID, "message").text,
        "the page to ask for an API key",
    )
    browser.find_element(By.ID, "api-key").send_keys(KEY_A)
    browser.find_element(By.ID, "save-key").click()
    assert browser.execute_script("return sessionStorage.getItem('nowcast.apiKey')") == KEY_A

    browser.find_element(By.ID, "radar-file").send_keys(str(RADAR_64))
    browser.find_element(By.ID, "members").send_keys("3")
    browser.find_element(By.ID, "steps").send_keys("4")
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "submit").click()
    message = _wait(
        browser,
        30,
        lambda d: re.search(r"Job (\S+) accepted", d.find_element(By.ID, "message").text),
        "the submission to be accepted",
    )
    job_id = message.group(1)
    row = f'#jobs tr[data-job-id="{job_id}"]'

    # the page is never reloaded: its own polling must bring the job to "successful"
    _wait(
        browser,
        180,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-status="successful"]'),
        f"job {job_id} to show successful in the page",
    )
    assert browser.find_element(By.CSS_SELECTOR, f"{row} td.status").text == "successful"
    assert browser.find_element(By.CSS_SELECTOR, f"{row} td.progress").text.strip() == "4/4"
    assert browser.find_element(By.CSS_SELECTOR, f"{row} td.members").text == "3"
    with cluster.client(KEY_A, 60) as alpha:
        job = alpha.get(f"/v1/nowcasts/{job_id}").json()
    assert job["status"] == "successful"
    assert (job["params"]["members"], job["params"]["steps"]) == (3, 4)

    browser.find_element(By.CSS_SELECTOR, f'{row} button[data-action="quicklook"]').click()
    widths = _wait(
        browser,
        60,
        lambda d: (w := _loaded_images(d)) and all(w.get(p) for p in QUICKLOOK_PRODUCTS) and w,
        "the three quick-look images to load",
    )
    # six 120-px frames side by side (the tiny model's lead times) and a colour bar
    assert all(widths[product] > 6 * 120 for product in QUICKLOOK_PRODUCTS), widths
    captions = browser.find_elements(By.CSS_SELECTOR, "#quicklook figcaption")
    assert [caption.text for caption in captions] == ["", "", ""]
    assert _foreign_resources(browser, cluster.url) == []

    browser.execute_script("window.scrollTo(0, 0)")
    path = _screenshot_dir(tmp_path) / "dashboard.png"
    assert browser.save_screenshot(str(path))
    print(f"dashboard screenshot: {path}")


def test_quicklook_endpoint_is_tenant_isolated_and_validates(cluster: Cluster) -> None:
    with cluster.client(KEY_A, 60) as alpha, cluster.client(KEY_B, 60) as beta:
        response = submit(
            alpha, RADAR_64.read_bytes(), members=2, steps=2, seed=3, thresholds_mm_h="0.5,2"
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert wait_status(alpha, job_id, timeout_s=180)["status"] == "successful"
        url = f"/v1/nowcasts/{job_id}/quicklook.png"

        for params in (
            {"product": "mean"},
            {"product": "member", "member": 1},
            {"product": "probability", "threshold_mm_h": 2},
        ):
            image = alpha.get(url, params=params)
            assert image.status_code == 200, image.text
            assert image.headers["content-type"] == "image/png"
            assert image.content.startswith(PNG_SIGNATURE)
            assert imread(io.BytesIO(image.content), format="png").shape[1] > 6 * 120

        assert beta.get(url).json()["code"] == "job-not-found"
        assert beta.get(url).status_code == 404
        assert httpx.get(f"{cluster.url}{url}").status_code == 401
        for params, code in (
            ({"product": "member", "member": 2}, "member-out-of-range"),
            ({"product": "probability", "threshold_mm_h": 1}, "threshold-not-in-forecast"),
        ):
            refused = alpha.get(url, params=params)
            assert (refused.status_code, refused.json()["code"]) == (422, code), refused.text
        assert alpha.get(url, params={"product": "median"}).status_code == 422


def test_docs_and_redoc_are_served_without_any_cdn(cluster: Cluster) -> None:
    for page in ("/docs", "/redoc"):
        response = httpx.get(f"{cluster.url}{page}")
        assert response.status_code == 200
        html = response.text
        assert "http://" not in html and "https://" not in html, html
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(asset.startswith("/docs/assets/") for asset in assets), assets
        for asset in assets:
            served = httpx.get(f"{cluster.url}{asset}")
            assert served.status_code == 200, asset
            assert len(served.content) > 1000, asset


def test_docs_render_in_the_browser_offline(cluster: Cluster, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{cluster.url}/docs")
    operations = _wait(
        browser,
        30,
        lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path"),
        "Swagger UI to render the operations",
    )
    paths = {operation.text.replace("\u200b", "") for operation in operations}
    assert {"/v1/nowcasts", "/v1/nowcasts/{job_id}/quicklook.png"} <= paths, paths
    assert _foreign_resources(browser, cluster.url) == []

    browser.get(f"{cluster.url}/redoc")
    _wait(
        browser,
        60,
        lambda d: "Submit a nowcast" in d.find_element(By.TAG_NAME, "body").text,
        "ReDoc to render the operations",
    )
    assert _foreign_resources(browser, cluster.url) == []
