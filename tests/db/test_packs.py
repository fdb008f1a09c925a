"""The pack registry's store on SQLite and PostgreSQL: versions are immutable, a race between two
publishers of one version leaves one record, listing orders versions by semantic precedence."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import pytest

from db.engine import Database
from db.packs import PackRecord, PackStore, PackVersionExists


def record(name: str, version: str, manifest: str = "m", tenant: str = "acme") -> PackRecord:
    return PackRecord(
        tenant=tenant,
        name=name,
        version=version,
        digest="sha256:" + hashlib.sha256(manifest.encode()).hexdigest(),
        manifest=manifest,
        status="active",
        published_at=datetime.now(UTC),
        published_by="user:alice",
    )


async def test_versions_are_immutable(database: Database) -> None:
    store = PackStore(database)
    first, new = await store.publish(record("deploy", "1.0.0", "one"))
    assert new
    again, new = await store.publish(record("deploy", "1.0.0", "one"))
    assert (again.digest, new) == (first.digest, False)
    with pytest.raises(PackVersionExists, match="immutable"):
        await store.publish(record("deploy", "1.0.0", "two"))
    stored = await store.get("acme", "deploy", "1.0.0")
    assert stored is not None and stored.manifest == "one"
    assert await store.get("globex", "deploy", "1.0.0") is None


async def test_concurrent_publishers_of_one_version(database: Database) -> None:
    store = PackStore(database)
    results = await asyncio.gather(
        *(store.publish(record("race", "1.0.0", f"content {i}")) for i in range(4)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, tuple)]
    assert len(winners) == 1
    assert all(isinstance(r, PackVersionExists) for r in results if not isinstance(r, tuple))


async def test_listing_order_and_highest_active(database: Database) -> None:
    store = PackStore(database)
    for name, version in [
        ("b", "1.0.0"),
        ("a", "1.2.0"),
        ("a", "1.10.0"),
        ("a", "1.10.0-rc.1"),
        ("a", "2"),
        ("a", "nightly"),
    ]:
        await store.publish(record(name, version, f"{name}{version}"))
    listed = [(r.name, r.version) for r in await store.versions("acme")]
    assert listed == [
        ("a", "2"),
        ("a", "1.10.0"),
        ("a", "1.10.0-rc.1"),
        ("a", "1.2.0"),
        ("a", "nightly"),
        ("b", "1.0.0"),
    ]
    assert [r.version for r in await store.versions("acme", "b")] == ["1.0.0"]

    disabled = await store.set_status("acme", "a", "2", "disabled", "user:admin")
    assert disabled is not None and disabled.status == "disabled"
    highest = await store.highest_active("acme", "a")
    assert highest is not None and highest.version == "1.10.0"
    assert await store.set_status("acme", "a", "9.9.9", "disabled", None) is None
    assert await store.highest_active("acme", "nope") is None
