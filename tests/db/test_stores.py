"""The stores on both databases: idempotency claims decided by the primary key under real
concurrency, lapsed claims taken over once, webhooks kept per tenant."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from db.engine import Database
from db.idempotency import IdempotencyStore, StoredResponse
from db.webhooks import MAX_WEBHOOKS, Registration, TooManyWebhooks, WebhookExists, WebhookStore

LOCK = timedelta(seconds=60)
KEEP = timedelta(hours=24)


def holder() -> str:
    return uuid.uuid4().hex


async def test_concurrent_claims_of_one_key_have_one_winner(database: Database) -> None:
    store = IdempotencyStore(database)
    now = datetime.now(UTC)
    holders = [holder() for _ in range(40)]
    results = await asyncio.gather(
        *(
            store.claim(
                "acme", "k", fingerprint="fp", holder=h, now=now, lock_for=LOCK, keep_for=KEEP,
                run_id=f"run-{h[:8]}",
            )
            for h in holders
        )
    )  # fmt: skip
    winners = {r.holder for r in results}
    assert len(winners) == 1
    (winner,) = winners
    assert winner in holders
    # Every loser saw the winner's claim, with the winner's run id.
    assert {r.run_id for r in results} == {f"run-{winner[:8]}"}


async def test_an_answer_is_kept_and_the_claim_ends(database: Database) -> None:
    store = IdempotencyStore(database)
    now = datetime.now(UTC)
    mine = holder()
    await store.claim(
        "acme", "k", fingerprint="fp", holder=mine, now=now, lock_for=LOCK, keep_for=KEEP
    )
    body = b'{"runId": "run-1", "steps": [' + b'{"id": "s"},' * 500 + b"{}]}"
    answer = StoredResponse(
        201, {"location": "/runs/run-1", "content-type": "application/json"}, body
    )
    done = await store.complete("acme", "k", mine, answer)
    assert done is not None and done.response == answer
    # Someone else's answer never overwrites it.
    assert (await store.complete("acme", "k", holder(), StoredResponse(200))) == done
    again = await store.claim(
        "acme", "k", fingerprint="fp", holder=holder(), now=now, lock_for=LOCK, keep_for=KEEP
    )
    assert again.holder == mine and again.response == answer
    # Keys are per tenant.
    other = await store.claim(
        "globex", "k", fingerprint="fp2", holder=holder(), now=now, lock_for=LOCK, keep_for=KEEP
    )
    assert other.response is None and other.fingerprint == "fp2"


async def test_a_lapsed_claim_is_taken_over_once_keeping_its_run_id(database: Database) -> None:
    store = IdempotencyStore(database)
    then = datetime.now(UTC) - timedelta(minutes=5)
    dead = holder()
    await store.claim(
        "acme", "k", fingerprint="fp", holder=dead, now=then, lock_for=LOCK, keep_for=KEEP,
        run_id="run-first",
    )  # fmt: skip
    now = datetime.now(UTC)
    # Another request under the key is refused, lapsed or not.
    other = await store.claim(
        "acme", "k", fingerprint="other", holder=holder(), now=now, lock_for=LOCK, keep_for=KEEP
    )
    assert other.holder == dead
    takers = [holder() for _ in range(20)]
    results = await asyncio.gather(
        *(
            store.claim(
                "acme", "k", fingerprint="fp", holder=h, now=now, lock_for=LOCK, keep_for=KEEP,
                run_id=f"run-{h[:8]}",
            )
            for h in takers
        )
    )  # fmt: skip
    assert len({r.holder for r in results}) == 1
    assert results[0].holder in takers
    assert {r.run_id for r in results} == {"run-first"}


async def test_lapse_and_release(database: Database) -> None:
    store = IdempotencyStore(database)
    now = datetime.now(UTC)
    first = holder()
    await store.claim(
        "acme", "k", fingerprint="fp", holder=first, now=now, lock_for=LOCK, keep_for=KEEP,
        run_id="run-a",
    )  # fmt: skip
    await store.lapse("acme", "k", holder(), now)  # not the holder: nothing changes
    held = await store.get("acme", "k")
    assert held is not None and not held.lapsed(now)
    await store.lapse("acme", "k", first, now)
    second = holder()
    taken = await store.claim(
        "acme", "k", fingerprint="fp", holder=second, now=now, lock_for=LOCK, keep_for=KEEP
    )
    assert (taken.holder, taken.run_id) == (second, "run-a")
    await store.release("acme", "k", first)  # not first's any more
    assert await store.get("acme", "k") is not None
    await store.release("acme", "k", second)
    assert await store.get("acme", "k") is None


async def test_expired_keys_are_replaced_and_pruned(database: Database) -> None:
    store = IdempotencyStore(database)
    long_ago = datetime.now(UTC) - timedelta(days=3)
    old = holder()
    await store.claim(
        "acme", "old", fingerprint="fp", holder=old, now=long_ago, lock_for=LOCK, keep_for=KEEP
    )
    await store.complete("acme", "old", old, StoredResponse(201, body=b"{}"))
    await store.claim(
        "acme", "gone", fingerprint="fp", holder=old, now=long_ago, lock_for=LOCK, keep_for=KEEP
    )
    now = datetime.now(UTC)
    fresh = await store.claim(
        "acme", "old", fingerprint="new", holder=holder(), now=now, lock_for=LOCK, keep_for=KEEP
    )
    assert fresh.fingerprint == "new" and fresh.response is None
    assert await store.prune(now) == 1
    assert await store.get("acme", "gone") is None
    assert await store.get("acme", "old") is not None


def hook(tenant: str, number: int) -> Registration:
    return Registration(
        id=f"wh-{number:016x}",
        tenant=tenant,
        url=f"https://hooks.example.com/{number}",
        events=["run.completed"],
        secret_ciphertext="gAAAA-ciphertext",
        created_at=datetime.now(UTC) + timedelta(milliseconds=number),
        created_by="user:alice",
    )


async def test_webhooks_crud_per_tenant(database: Database) -> None:
    store = WebhookStore(database)
    first, second = hook("acme", 1), hook("acme", 2)
    await store.add(first)
    await store.add(second)
    await store.add(hook("globex", 3))
    assert [w.id for w in await store.list("acme")] == [first.id, second.id]
    got = await store.get("acme", first.id)
    assert got == first
    assert await store.get("globex", first.id) is None  # another tenant's is not found
    with pytest.raises(WebhookExists):
        await store.add(first)
    assert not await store.delete("globex", first.id)
    assert await store.delete("acme", first.id)
    assert not await store.delete("acme", first.id)
    assert [w.id for w in await store.list("acme")] == [second.id]


async def test_the_webhook_limit_holds_under_concurrent_registrations(database: Database) -> None:
    store = WebhookStore(database)
    results = await asyncio.gather(
        *(store.add(hook("busy", n)) for n in range(MAX_WEBHOOKS + 10)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, TooManyWebhooks)]
    assert len(refused) == 10
    assert len(await store.list("busy")) == MAX_WEBHOOKS
