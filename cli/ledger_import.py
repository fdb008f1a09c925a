"""`taskrunner db import-ledger`: the one-off move of the TaskRunnerLedger workflows' data into
the database, for a deployment upgraded from a version that kept webhooks and idempotency keys
in one ledger workflow per tenant (`taskrunner-ledger/<tenant>`).

Run it once after `taskrunner db upgrade`, with the new API deployed (so no new registration
goes to a ledger meanwhile): it reads every running ledger's state from its history (the state
it started with, then each update it accepted, in order; no worker needs to run the removed
workflow code), writes the webhooks (secrets as they were, still encrypted) and the idempotency
keys whose answers are recorded and not yet expired, and with `--terminate` ends each ledger it
has imported. Running it again imports nothing twice. Keys whose request was still in progress
are not imported: their request died with the old API, and a retry acts anew, as it would have.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cli.main import EXIT_OK, CliError

LEDGER_WORKFLOW_TYPE = "TaskRunnerLedger"
LEDGER_ID_PREFIX = "taskrunner-ledger/"


@dataclass
class LedgerData:
    """A ledger's state as its history leaves it: JSON as the ledger kept it."""

    tenant: str
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


async def read_ledger(client: Any, workflow_id: str) -> LedgerData:
    """Replay a ledger's current run from its history, without its workflow code."""
    converter = client.data_converter
    handle = client.get_workflow_handle(workflow_id)
    data: LedgerData | None = None
    accepted: dict[str, tuple[str, list[Any]]] = {}
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_started_event_attributes"):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            (start,) = await converter.decode(payloads)
            state = start.get("state") or {}
            data = LedgerData(
                tenant=start["tenant"],
                webhooks=list(state.get("webhooks") or []),
                records=dict(state.get("idempotency") or {}),
            )
        elif event.HasField("workflow_execution_update_accepted_event_attributes"):
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            args = await converter.decode(request.input.args.payloads)
            accepted[request.meta.update_id] = (request.input.name, list(args))
        elif event.HasField("workflow_execution_update_completed_event_attributes"):
            completed = event.workflow_execution_update_completed_event_attributes
            name, args = accepted.pop(completed.meta.update_id, ("", []))
            if data is None or not completed.outcome.HasField("success"):
                continue
            results = await converter.decode(completed.outcome.success.payloads)
            _apply(data, name, args, results[0] if results else None)
    if data is None:
        raise CliError(f"{workflow_id}: its history has no start")
    return data


def _apply(data: LedgerData, name: str, args: list[Any], result: Any) -> None:
    """What the ledger's update handlers did, from their arguments and results."""
    if name == "register_webhook" and isinstance(result, dict):
        data.webhooks.append(result)
    elif name == "delete_webhook" and args:
        data.webhooks = [w for w in data.webhooks if w.get("id") != args[0].get("id")]
    elif name == "remember" and isinstance(result, dict):
        data.records[result["key"]] = result  # what the key holds after the update
    elif name == "release" and args:
        key, holder = args[0].get("key"), args[0].get("holder")
        record = data.records.get(key)
        if record and record.get("response") is None and record.get("holder") == holder:
            del data.records[key]


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _body(response: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    headers = dict(response.get("headers") or {})
    body = str(response.get("body") or "")
    encoding = response.get("encoding", "identity")
    if encoding == "zlib+base64":
        return zlib.decompress(base64.b64decode(body)), headers
    if encoding == "omitted":
        headers.pop("content-type", None)
        return b"", headers
    return body.encode(), headers


@dataclass
class Imported:
    webhooks: int = 0
    keys: int = 0
    skipped: int = 0


async def import_ledger(data: LedgerData, database: Any, now: datetime) -> Imported:
    """Write a ledger's webhooks and answered, live keys; what is there already is kept."""
    from db.idempotency import IdempotencyStore, StoredResponse
    from db.webhooks import Registration, TooManyWebhooks, WebhookExists, WebhookStore

    done = Imported()
    hooks = WebhookStore(database)
    for hook in data.webhooks:
        try:
            await hooks.add(
                Registration(
                    id=hook["id"],
                    tenant=data.tenant,
                    url=hook["url"],
                    events=list(hook["events"]),
                    secret_ciphertext=hook["secretCiphertext"],
                    created_at=_at(hook["createdAt"]) if hook.get("createdAt") else now,
                    created_by=hook.get("createdBy"),
                )
            )
            done.webhooks += 1
        except (WebhookExists, TooManyWebhooks):
            done.skipped += 1
    keys = IdempotencyStore(database)
    for key, record in data.records.items():
        response = record.get("response")
        expires = _at(record["expiresAt"])
        if response is None or expires <= now:
            done.skipped += 1
            continue
        holder = f"ledger-{uuid.uuid4().hex[:24]}"  # this import's claim, no other's
        claimed = await keys.claim(
            data.tenant,
            key,
            fingerprint=record["fingerprint"],
            holder=holder,
            now=now,
            lock_for=timedelta(seconds=60),
            keep_for=expires - now,
        )
        if claimed.holder != holder:
            done.skipped += 1  # the key is in the database already
            continue
        body, headers = _body(response)
        await keys.complete(
            data.tenant, key, holder, StoredResponse(int(response["status"]), headers, body)
        )
        done.keys += 1
    return done


def import_ledger_command(args: argparse.Namespace) -> int:
    from api.settings import get_api_settings
    from cli.db_commands import _database
    from workflows.contract.settings import connect

    async def go() -> int:
        try:
            client = await connect(get_api_settings())
        except Exception as exc:
            raise CliError(f"cannot reach Temporal: {str(exc).splitlines()[0][:200]}") from None
        query = f"WorkflowType = '{LEDGER_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'"
        ids = [w.id async for w in client.list_workflows(query)]
        if not ids:
            print("no running ledger workflows: nothing to import")
            return EXIT_OK
        async with _database() as database:
            for workflow_id in sorted(ids):
                data = await read_ledger(client, workflow_id)
                if args.dry_run:
                    print(
                        f"{workflow_id}: tenant {data.tenant}, {len(data.webhooks)} webhooks, "
                        f"{len(data.records)} idempotency keys (dry run: nothing written)"
                    )
                    continue
                done = await import_ledger(data, database, datetime.now(UTC))
                print(
                    f"{workflow_id}: tenant {data.tenant}: imported {done.webhooks} webhooks, "
                    f"{done.keys} idempotency keys ({done.skipped} already there, expired or "
                    "unanswered)"
                )
                if args.terminate:
                    await client.get_workflow_handle(workflow_id).terminate(
                        reason="moved to the database by `taskrunner db import-ledger`"
                    )
                    print(f"{workflow_id}: terminated")
        return EXIT_OK

    return asyncio.run(go())


def register(commands: Any) -> None:
    command = commands.add_parser(
        "import-ledger",
        help="one-off: move the old ledger workflows' webhooks and keys into the database",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "--terminate", action="store_true", help="terminate each ledger workflow once imported"
    )
    command.add_argument("--dry-run", action="store_true", help="only say what each ledger holds")
    command.set_defaults(handler=import_ledger_command)
