"""A pack secret's value, given to the worker as TASKRUNNER_SECRET_<NAME> and echoed by a shell
step, never appears in the run's Temporal history (payloads decoded), its state (outputs
included), its log, or its artifacts, listed or downloaded."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.api.support import READER, create_run, run_url, status_is, wait_for_run
from tests.helpers import state_of
from workflows.contract.names import workflow_id

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: secret-echo, version: 1.0.0}
spec:
  secrets: [{name: DEPLOY_TOKEN}]
  steps:
    - id: leak
      run:
        uses: builtin:shell
        with:
          env: {TOKEN: "{{ secrets.DEPLOY_TOKEN }}"}
          command: >-
            echo "token is $TOKEN"; echo "again {{ secrets.DEPLOY_TOKEN }}" >&2;
            mkdir -p out; printf '%s' "$TOKEN" > out/token.txt;
            echo "::outputs::{\\"seen\\": \\"$TOKEN\\"}"
    - {id: after, run: {uses: "builtin:echo", with: {previous: "{{ steps.leak.outputs }}"}}}
  outputs:
    - {name: token-file, type: file, path: out/token.txt}
    - {name: leak-outputs, type: object, expression: "{{ steps.leak.outputs }}"}
"""


def strings_in(document: Any) -> list[str]:
    """Every string in a JSON document, and what each base64 one decodes to (payload data)."""
    found: list[str] = []
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            found.append(item)
            with contextlib.suppress(binascii.Error, ValueError):
                found.append(base64.b64decode(item, validate=True).decode("utf-8", "replace"))
    return found


@pytest.fixture
def secret_value(monkeypatch: pytest.MonkeyPatch) -> str:
    # The session's worker runs in this process and reads secrets from its environment.
    value = f"s3cr3t-{secrets.token_hex(12)}"
    monkeypatch.setenv("TASKRUNNER_SECRET_DEPLOY_TOKEN", value)
    return value


class TestSecretNeverLeaks:
    async def test_not_in_history_state_logs_or_artifacts(
        self,
        http: httpx.AsyncClient,
        dev_env: WorkflowEnvironment,
        stack: Any,
        secret_value: str,
    ) -> None:
        created = await create_run(http, PACK)
        run_id = created["runId"]
        final = await wait_for_run(http, run_id, status_is("succeeded", "failed"))
        assert final["status"] == "succeeded", final

        handle = dev_env.client.get_workflow_handle(workflow_id("default", run_id))
        history = json.loads((await handle.fetch_history()).to_json())
        full_state = (await state_of(handle)).model_dump_json()
        logs = (await http.get(f"{run_url(run_id)}/logs", headers=READER)).text
        listing = await http.get(f"{run_url(run_id)}/artifacts", headers=READER)
        downloads = {
            a["name"]: (
                await http.get(f"{run_url(run_id)}/artifacts/{a['name']}", headers=READER)
            ).text
            for a in listing.json()
            if a["type"] == "file" and a["status"] == "captured"
        }
        on_disk = {
            p.name: p.read_bytes().decode("utf-8", "replace")
            for p in Path(stack.settings.data_dir).glob(f"runs/default/{run_id}/artifacts/*")
        }

        # The secret did reach the step, masked on the way out: the step saw a value and the
        # captured file exists, with the mask where the value was.
        assert downloads.get("token-file"), downloads
        assert set(downloads) >= {"leak.stdout", "leak.stderr"} or on_disk, (downloads, on_disk)
        places = {
            "history": "\n".join(strings_in(history)),
            "state": full_state,
            "GET run": json.dumps(final),
            "logs": logs,
            "artifact listing": listing.text,
            **{f"download {k}": v for k, v in downloads.items()},
            **{f"stored {k}": v for k, v in on_disk.items()},
        }
        leaked = [where for where, text in places.items() if secret_value in text]
        assert not leaked, leaked
        assert "token is" in on_disk.get("leak.stdout", downloads.get("leak.stdout", ""))
