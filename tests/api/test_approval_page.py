"""GET /approvals/{token}: the page of a signed approval link. Opening it (as a mail scanner or a
link preview does) decides nothing; its buttons POST the link, and only that decides."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.conftest import Stack
from tests.api.packs import GATED, replaced
from tests.api.support import create_run, error_code, status_is, wait_for_run
from tests.api.test_links import LINKS, QUORUM, link, waiting_run
from tests.browser import offline_browser

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)> & \"quoted\" 'single'"
HOSTILE_GATE = replaced(
    GATED,
    "message: A release manager must approve this release.",
    f"message: {json.dumps(HOSTILE)}",
)
HOSTILE_GATE = replaced(
    HOSTILE_GATE, "message: Release the build?", f"message: {json.dumps(HOSTILE)}"
)


def review_url(state: dict[str, Any], **claims: Any) -> str:
    """The `links.review` of a delivery: the approve link with its reject sibling."""
    approve = link(state, "approved", nonce="n-page", **claims)
    reject = link(state, "rejected", nonce="n-page", **claims)
    return f"{LINKS}/{approve}?other={reject}"


def forms(page: str) -> list[tuple[str, str]]:
    """(action, button label) of each form on the page."""
    found = re.findall(
        r"<form method='post' action='([^']*)'><button type='submit' class='[a-z]+'>(\w+)</button>",
        page,
    )
    return [(action, label) for action, label in found]


class TestTheGetDecidesNothing:
    async def test_page_shows_the_gate_and_decides_nothing(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        url = review_url(state)
        for _ in range(3):  # a scanner, a preview, the person: nobody decided
            page = await http.get(url)
            assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        text = page.text
        assert state["runId"] in text
        assert state["planHash"] in text
        assert "example-gate-approval" in text and "release-manager" in text
        assert "1 holder of packs.approve" in text or "approver" in text  # what is missing
        assert "Release the build?" in text or "A release manager must approve" in text
        assert [label for _, label in forms(text)] == ["Approve", "Reject"]
        still = await wait_for_run(http, state["runId"], status_is("awaiting-approval"))
        assert still["approvals"][0]["status"] in ("waiting", "pending")
        assert still["approvals"][0]["decisions"] == []

    async def test_page_headers_allow_nothing_from_elsewhere(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        page = await http.get(f"{LINKS}/{link(state)}")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'none'" in csp
        assert "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["referrer-policy"] == "no-referrer"  # the token is in the URL
        assert page.headers["cache-control"] == "no-store"
        assert "http://" not in page.text and "https://" not in page.text  # no external assets
        # A plain link (no sibling) offers its own decision only.
        assert [label for _, label in forms(page.text)] == ["Approve"]

    async def test_everything_shown_is_escaped(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http, HOSTILE_GATE)
        page = await http.get(review_url(state))
        assert page.status_code == 200, page.text
        assert "<script>" not in page.text and "<img" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text

    async def test_a_page_of_two_links_needs_a_true_pair(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        elsewhere = await waiting_run(http)  # another run, its link minted with the same nonce
        approve = link(state, "approved", nonce="one")
        # Another link's reject (another nonce), another run's, or the same decision twice: no
        # page (a page pairing them would decide one run with the other's button).
        for other in (
            link(state, "rejected", nonce="two"),
            link(elsewhere, "rejected", nonce="one"),
            link(state, "approved", nonce="one"),
        ):
            page = await http.get(f"{LINKS}/{approve}", params={"other": other})
            assert page.status_code == 400, page.text
            assert "invalid_link" in page.text and not forms(page.text)

    async def test_an_altered_link_is_no_link(self, http: httpx.AsyncClient) -> None:
        """A base64 decoder that skips what is not base64 read `\\\\TOKEN=@evil.example` as the
        very link, and the page put it in a button's action, which a browser sends to
        evil.example: a link holder could make the service's own page post elsewhere. Only the
        link exactly as the service minted it is a link."""
        state = await waiting_run(http)
        approve = link(state, "approved", nonce="n-alt")
        reject = link(state, "rejected", nonce="n-alt")
        offsite = "\\\\" + reject + "=@evil.example"
        page = await http.get(f"{LINKS}/{approve}", params={"other": offsite})
        assert page.status_code == 400, page.text
        assert "invalid_link" in page.text and not forms(page.text)
        assert "evil.example" not in page.text
        for altered in ("!" + approve, approve + "=", approve + "=x", approve.replace(".", ".:")):
            shown = await http.get(f"{LINKS}/{altered}")
            assert shown.status_code == 400, (altered, shown.text)
            posted = await http.post(f"{LINKS}/{altered}", json={})
            assert posted.status_code == 400, (altered, posted.text)
            assert error_code(posted) == "invalid_link"
        still = await wait_for_run(http, state["runId"], status_is("awaiting-approval"))
        assert still["approvals"][0]["decisions"] == []

    async def test_bad_links_get_a_page_saying_why(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        forged = link(state, key="another-signing-key-of-the-same-length-0123456789")
        cases = {
            forged: (401, "invalid_link_signature"),
            "garbage": (400, "invalid_link"),
            link(state, expires_in=-5): (410, "link_expired"),
        }
        for token, (status, code) in cases.items():
            page = await http.get(f"{LINKS}/{token}")
            assert (page.status_code, code in page.text) == (status, True), page.text
            assert page.headers["content-type"].startswith("text/html")
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert not forms(page.text)

    async def test_a_decided_gate_offers_no_buttons(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        url = review_url(state)
        action = forms((await http.get(url)).text)[1][0]  # Reject
        posted = await http.post(
            f"{LINKS}/{action}", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert posted.status_code == 200, posted.text
        assert posted.headers["content-type"].startswith("text/html")
        assert "rejected" in posted.text
        await wait_for_run(http, state["runId"], status_is("failed"))
        page = await http.get(url)
        assert "Nothing left to decide" in page.text and not forms(page.text)
        # The same form sent again: the link was used, said on a page.
        again = await http.post(
            f"{LINKS}/{action}", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert again.status_code == 409 and "text/html" in again.headers["content-type"]

    async def test_a_used_link_offers_no_buttons_while_the_gate_waits_on(
        self, http: httpx.AsyncClient
    ) -> None:
        """On a 2-of-2 gate the first vote leaves the gate pending: the page of that delivery's
        links offered Approve and Reject again, each a sure 409 (the link's identity has voted)."""
        state = await waiting_run(http, QUORUM)
        url = review_url(state, subject="webhook:hook-page")
        approve = forms((await http.get(url)).text)[0][0]
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (await http.post(f"{LINKS}/{approve}", headers=form)).status_code == 200
        page = await http.get(url)
        assert page.status_code == 200, page.text
        assert "pending" in page.text and not forms(page.text)
        assert "webhook:hook-page has decided already" in page.text
        # Another delivery's links (another identity) still have their say.
        other = review_url(state, subject="webhook:hook-other")
        assert [label for _, label in forms((await http.get(other)).text)] == ["Approve", "Reject"]


async def test_link_tokens_stay_out_of_the_access_log(
    http: httpx.AsyncClient, capfd: pytest.CaptureFixture[str]
) -> None:
    state = await waiting_run(http)
    approve, reject = link(state, "approved", nonce="n-log"), link(state, "rejected", nonce="n-log")
    assert (await http.get(f"{LINKS}/{approve}", params={"other": reject})).status_code == 200
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await http.post(f"{LINKS}/{reject}", headers=form)).status_code == 200
    # A client that joins its base URL with a slash too many (or a proxy's prefix) reaches no
    # route: the token is still the link's authority, so it is not logged either.
    for path in (f"/{LINKS}/{approve}", f"/prefix{LINKS}/{approve}"):
        assert (await http.get(path, params={"other": reject})).status_code == 404
    logged = capfd.readouterr().out
    assert "/approvals/{token}" in logged
    leaked = [line for line in logged.splitlines() if approve in line or reject in line]
    assert leaked == []


def _approve_in_browser(url: str) -> dict[str, Any]:
    with offline_browser() as driver:
        driver.get(url)
        shown = driver.find_element(By.TAG_NAME, "body").text
        scripts = driver.execute_script("return document.scripts.length")
        driver.find_element(By.XPATH, "//button[text()='Approve']").click()
        WebDriverWait(driver, 30).until(lambda d: "Decision recorded" in d.title)
        return {
            "shown": shown,
            "scripts": scripts,
            "after": driver.find_element(By.TAG_NAME, "body").text,
        }


async def test_approve_in_a_real_browser(stack: Stack, http: httpx.AsyncClient) -> None:
    created = await create_run(http, HOSTILE_GATE)
    state = await wait_for_run(http, created["runId"], status_is("awaiting-approval"))
    seen = await asyncio.to_thread(_approve_in_browser, stack.url + review_url(state))
    # The hostile message is text on the page, not markup: no script made it in.
    assert "<script>alert(1)</script>" in seen["shown"]
    assert seen["scripts"] == 0
    assert state["runId"] in seen["shown"] and state["planHash"] in seen["shown"]
    assert "moved on past the gate" in seen["after"]
    done = await wait_for_run(http, state["runId"], status_is("succeeded"))
    gate = done["approvals"][0]
    assert gate["status"] == "approved"
    assert [(d["actorId"], d["via"]) for d in gate["decisions"]] == [("link:unbound", "link")]
