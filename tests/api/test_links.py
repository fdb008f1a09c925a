"""POST /approvals/{token}: signed approval links decide a gate without a bearer token, once."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import httpx
import pytest

from api.app import create_app
from cli.settings import DevSettings
from tests.api.packs import GATED, replaced
from tests.api.support import (
    APPROVER,
    READER,
    SIGNING_KEY,
    bearer,
    create_run,
    error_code,
    run_url,
    serve,
    status_is,
    wait_for_run,
)
from tests.helpers import unique
from workflows.contract.signing import (
    ApprovalToken,
    TokenBadSignature,
    mint_token,
    verify_token,
)

LINKS = "/v1/task-runner/approvals"
GATE = "release-manager"
QUORUM = replaced(GATED, "requiredApprovals: 1", "requiredApprovals: 2")
SLOW_AFTER_GATE = replaced(
    GATED,
    'uses: builtin:echo\n        with: {released: "{{ steps.build.outputs.artifact }}"}',
    "uses: builtin:sleep\n        with: {seconds: 60}",
)


def link(
    state: dict[str, Any],
    decision: str = "approved",
    *,
    expires_in: int = 600,
    key: str = SIGNING_KEY,
    **claims: Any,
) -> str:
    """A link as the webhook activity mints it, for `state`'s run."""
    token = ApprovalToken(
        **{
            "tenant": state["tenant"],
            "runId": state["runId"],
            "approvalId": GATE,
            "planHash": state["planHash"],
            "decision": decision,
            "expiresAt": int(time.time()) + expires_in,
            "nonce": secrets.token_hex(8),
            **claims,
        }
    )
    return mint_token(key.encode(), token)


async def waiting_run(http: httpx.AsyncClient, manifest: str = GATED) -> dict[str, Any]:
    created = await create_run(http, manifest)
    return await wait_for_run(http, created["runId"], status_is("awaiting-approval"))


class TestApplyApprovalLink:
    async def test_approve_once_without_a_bearer_token(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        response = await http.post(f"{LINKS}/{link(state)}", json={"summary": "from chat"})
        assert response.status_code == 200, response.text
        assert {"status": "approved", "resumed": True}.items() <= response.json().items()
        done = await wait_for_run(http, state["runId"], status_is("succeeded"))
        decision = done["approvals"][0]["decisions"][0]
        assert decision["actorId"].startswith("link:") and decision["summary"] == "from chat"

    async def test_a_used_link_is_409_whoever_sends_it(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http, SLOW_AFTER_GATE)  # still running after the gate
        token = link(state)
        assert (await http.post(f"{LINKS}/{token}")).status_code == 200
        for body in (None, {"actorId": "user:mallory"}):
            again = await http.post(f"{LINKS}/{token}", json=body)
            assert again.status_code == 409, body
            assert error_code(again) == "link_already_used"
        # Any other link to the decided gate is refused too, and so is any once the run ended.
        fresh = await http.post(f"{LINKS}/{link(state)}")
        assert (fresh.status_code, error_code(fresh)) == (409, "approval_already_decided")
        cancel = await http.post(f"{run_url(state['runId'])}/cancel", headers=APPROVER)
        assert cancel.status_code == 202
        await wait_for_run(http, state["runId"], status_is("cancelled"))
        late = await http.post(f"{LINKS}/{token}")
        assert (late.status_code, error_code(late)) == (409, "run_finished")

    async def test_a_used_link_counts_once_toward_a_quorum(self, http: httpx.AsyncClient) -> None:
        # The gate stays open after the first vote: only the token id stops a second one.
        state = await waiting_run(http, QUORUM)
        token = link(state, subject="webhook:hook-1")
        first = await http.post(f"{LINKS}/{token}", json={"actorId": "user:ann"})
        assert first.json() == {
            "status": "approved",
            "resumed": False,
            "approvals": 1,
            "requiredApprovals": 2,
            "missing": ["1 more approver"],
        }
        for body in ({"actorId": "user:ben"}, {}, None):
            response = await http.post(f"{LINKS}/{token}", json=body)
            assert response.status_code == 409, body
            assert error_code(response) == "link_already_used"

    async def test_a_link_sent_again_and_again_is_logged_once(
        self, http: httpx.AsyncClient
    ) -> None:
        """Each refused use of a link reached the run, which logged it: anyone holding a used
        link (no token needed) could grow a waiting run's log and history without end, up to
        Temporal's limits, which end the run. The first refusal is in the log; its repeats are
        refused by the API alike, without reaching the run."""
        state = await waiting_run(http, QUORUM)
        token = link(state, subject="webhook:hook-flood")
        assert (await http.post(f"{LINKS}/{token}")).status_code == 200
        for _ in range(15):
            again = await http.post(f"{LINKS}/{token}")
            assert (again.status_code, error_code(again)) == (409, "link_already_used")
        logs = (await http.get(f"{run_url(state['runId'])}/logs", headers=READER)).text
        refused = [line for line in logs.splitlines() if "gate.decision-refused" in line]
        assert len(refused) == 1, refused
        assert '"error":"TokenAlreadyUsed"' in refused[0]
        # Another link of the same person is a refusal of its own, logged once too.
        other = link(state, subject="webhook:hook-flood")
        for _ in range(3):
            again = await http.post(f"{LINKS}/{other}")
            assert (again.status_code, error_code(again)) == (409, "duplicate_approver")
        logs = (await http.get(f"{run_url(state['runId'])}/logs", headers=READER)).text
        assert logs.count("gate.decision-refused") == 2, logs

    async def test_one_link_holder_fills_one_seat_whatever_name_it_gives(
        self, http: httpx.AsyncClient
    ) -> None:
        # Issue #10 (b): fresh links (as each webhook retry minted them) with made-up names filled
        # a 2-of-2 gate as "user:alice" and "user:bob", and the real bob was then refused.
        state = await waiting_run(http, QUORUM)
        first = await http.post(
            f"{LINKS}/{link(state, subject='webhook:hook-1')}", json={"actorId": "user:alice"}
        )
        assert first.status_code == 200, first.text
        again = await http.post(
            f"{LINKS}/{link(state, subject='webhook:hook-1')}", json={"actorId": "user:bob"}
        )
        assert (again.status_code, error_code(again)) == (409, "duplicate_approver")
        bob = bearer("taskrunner.operator", sub="user:bob", grants=["packs.approve"])
        body = {"decision": "approved", "planHash": state["planHash"]}
        real = await http.post(
            f"{run_url(state['runId'])}/approvals/{GATE}", json=body, headers=bob
        )
        assert real.status_code == 200, real.text
        assert real.json()["resumed"] is True
        done = await wait_for_run(http, state["runId"], status_is("succeeded"))
        decisions = done["approvals"][0]["decisions"]
        assert [(d["actorId"], d["via"]) for d in decisions] == [
            ("webhook:hook-1", "link"),
            ("user:bob", "rest"),
        ]
        assert decisions[0]["statedActorId"] == "user:alice"
        logs = (await http.get(f"{run_url(state['runId'])}/logs", headers=READER)).text
        refused = [line for line in logs.splitlines() if "gate.decision-refused" in line]
        assert len(refused) == 1
        assert '"error":"DuplicateApprover"' in refused[0]
        assert '"actorId":"webhook:hook-1"' in refused[0]
        assert '"via":"link"' in refused[0]

    async def test_reject_link_fails_the_gate(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        response = await http.post(
            f"{LINKS}/{link(state, 'rejected')}", json={"decision": "rejected"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "rejected"
        await wait_for_run(http, state["runId"], status_is("failed"))

    async def test_body_decision_must_be_the_links(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        response = await http.post(f"{LINKS}/{link(state)}", json={"decision": "rejected"})
        assert response.status_code == 400
        assert error_code(response) == "invalid_link"
        unknown = await http.post(f"{LINKS}/{link(state)}", json={"approver": "x"})
        assert unknown.status_code == 400
        still = await wait_for_run(http, state["runId"], status_is("awaiting-approval"))
        assert still["approvals"][0]["decisions"] == []

    async def test_expired_link_is_410(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        response = await http.post(f"{LINKS}/{link(state, expires_in=-5)}")
        assert response.status_code == 410
        assert error_code(response) == "link_expired"

    async def test_invalid_links(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        forged = link(state, key="another-signing-key-of-the-same-length-0123456789")
        response = await http.post(f"{LINKS}/{forged}")
        assert response.status_code == 401
        assert error_code(response) == "invalid_link_signature"
        token = link(state)
        body, mac = token.split(".")
        for bad in ("garbage", "no.signature!", f"{body}x.{mac}"):
            response = await http.post(f"{LINKS}/{bad}")
            assert response.status_code in (400, 401), bad
            assert error_code(response) in {"invalid_link", "invalid_link_signature"}, bad
        still = await wait_for_run(http, state["runId"], status_is("awaiting-approval"))
        assert still["approvals"][0]["decisions"] == []

    async def test_a_link_for_another_run_is_refused(self, http: httpx.AsyncClient) -> None:
        one = await waiting_run(http)
        other = await waiting_run(http, QUORUM)  # another plan: another plan hash
        # Run one's id with the other run's plan hash: the run refuses it.
        crossed = link(one, planHash=other["planHash"])
        response = await http.post(f"{LINKS}/{crossed}")
        assert response.status_code == 409
        assert error_code(response) == "plan_hash_mismatch"
        missing = await http.post(f"{LINKS}/{link(one, runId=unique('no-run'))}")
        assert missing.status_code == 404
        assert error_code(missing) == "run_not_found"
        elsewhere = await http.post(f"{LINKS}/{link(one, tenant=unique('tenant'))}")
        assert elsewhere.status_code == 404
        for state in (one, other):
            still = await wait_for_run(http, state["runId"], status_is("awaiting-approval"))
            assert still["approvals"][0]["decisions"] == []

    async def test_without_a_signing_key_links_are_503(
        self, api_settings: DevSettings, stack: Any
    ) -> None:
        keyless = api_settings.model_copy(update={"signing_key": None})
        with serve(create_app(keyless)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                response = await client.post(f"{LINKS}/anything.at-all")
        assert response.status_code == 503
        assert error_code(response) == "signing_key_missing"


class TestLinkIdentity:
    def test_links_minted_before_identities_share_one_seat_and_keep_their_ids(self) -> None:
        # A link minted before links named their identity: its id is the one it was minted
        # with (so "used once" still holds after the upgrade), and every such link counts for
        # one identity, so a holder of several fills one seat.
        claims = {
            "tenant": "t",
            "runId": "r",
            "approvalId": "a",
            "planHash": "sha256:" + "0" * 64,
            "decision": "approved",
            "expiresAt": 2_000_000_000,
            "nonce": "n1",
        }
        old = ApprovalToken(**claims)
        minted_then = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).hexdigest()[:16]
        assert old.token_id == minted_then
        another = ApprovalToken(**{**claims, "nonce": "n2"})
        assert old.identity == another.identity == "link:unbound"
        assert old.token_id != another.token_id
        bound = ApprovalToken(**claims, subject="webhook:hook-1")
        assert bound.identity == "webhook:hook-1"
        assert bound.token_id != old.token_id
        # The subject is signed: a holder cannot rename the identity the link votes for.
        text = mint_token(SIGNING_KEY.encode(), bound)
        assert verify_token(SIGNING_KEY.encode(), text, 0).identity == "webhook:hook-1"
        body, mac = text.split(".")
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload["subject"] = "user:bob"
        renamed = base64.urlsafe_b64encode(
            json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        )
        with pytest.raises(TokenBadSignature):
            verify_token(SIGNING_KEY.encode(), f"{renamed.decode().rstrip('=')}.{mac}", 0)
