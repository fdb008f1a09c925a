"""/docs works with no Internet access: its assets come from the service itself."""

from __future__ import annotations

import asyncio
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.conftest import Stack
from tests.browser import offline_browser

# A page that needs a CDN: in the cut-off browser its script never arrives.
CDN_PAGE = (
    "<script src='https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js'></script>"
)


def _resources(driver: Any) -> list[str]:
    names: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return names


def _docs_in_browser(url: str) -> dict[str, Any]:
    with offline_browser() as driver:
        # The cut holds: a page that loads Swagger UI from a CDN gets no Swagger UI.
        driver.get(f"{url}/healthz")
        driver.execute_script("document.write(arguments[0]); document.close()", CDN_PAGE)
        cdn_loaded = driver.execute_script("return typeof SwaggerUIBundle !== 'undefined'")

        driver.get(f"{url}/docs")
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 5
        )
        operations = [
            e.get_attribute("textContent")
            for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        ]
        return {"cdn_loaded": cdn_loaded, "operations": operations, "resources": _resources(driver)}


async def test_docs_lists_the_operations_offline(stack: Stack) -> None:
    seen = await asyncio.to_thread(_docs_in_browser, stack.url)
    assert seen["cdn_loaded"] is False, "the browser reached a CDN: the network is not cut"
    paths = {p.replace("\u200b", "") for p in seen["operations"]}
    assert "/v1/task-runner/runs" in paths
    assert "/v1/task-runner/simulations" in paths
    outside = [r for r in seen["resources"] if not r.startswith(stack.url)]
    assert not outside, f"/docs asked for something off the service: {outside}"
