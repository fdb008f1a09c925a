"""The pack registry over REST: publish (immutable versions, signatures), list, read, disable and
enable; runs and simulations of a registered pack by name and version."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import yaml

from api.pack_signing import sign_pack
from tests.api.support import (
    APPROVER,
    PACK_SIGNER,
    READER,
    RUNS,
    bearer,
    error_code,
    run_url,
    status_is,
    token,
    wait_for_run,
)
from tests.compiler.packs import ONE_PASS
from tests.helpers import unique
from workflows.contract.service_key import generate_private_pem, parse_private_pem

PACKS = "/v1/task-runner/packs"
ADMIN = bearer("taskrunner.admin")


def manifest(name: str, version: str, greeting: str = "hello") -> str:
    return f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: {name}, version: "{version}"}}
spec:
  inputs:
    - {{name: who, type: string, required: true}}
  steps:
    - {{id: hello, run: {{uses: "builtin:echo", with: {{greeting: "{greeting} {{{{ inputs.who }}}}"}}}}}}
"""


async def publish(http: httpx.AsyncClient, text: str, **extra: Any) -> httpx.Response:
    return await http.post(PACKS, json={"manifest": text, **extra}, headers=ADMIN)


class TestPublishPack:
    async def test_versions_are_immutable(self, http: httpx.AsyncClient) -> None:
        name = unique("pk")
        first = await publish(http, manifest(name, "1.0.0"))
        assert first.status_code == 201, first.text
        record = first.json()
        assert (record["name"], record["version"], record["status"]) == (name, "1.0.0", "active")
        assert record["digest"].startswith("sha256:") and len(record["digest"]) == 71
        assert record["publishedBy"] == "user:alice"
        again = await publish(http, manifest(name, "1.0.0"))
        assert again.status_code == 200
        assert again.json() == record
        other = await publish(http, manifest(name, "1.0.0", greeting="hi"))
        assert other.status_code == 409
        assert error_code(other) == "pack_version_exists"

    async def test_invalid_manifest_is_a_plan_error(self, http: httpx.AsyncClient) -> None:
        response = await publish(http, manifest(unique("pk"), "1.0.0").replace("builtin:echo", ""))
        assert response.status_code == 400
        assert response.json()["errors"][0]["path"].startswith("spec.steps[0]")

    async def test_every_manifest_error_is_reported_at_publish(
        self, http: httpx.AsyncClient
    ) -> None:
        # The unknown key once stopped the check before the duplicate id and the unknown step.
        response = await publish(http, ONE_PASS.replace("name: demo", f"name: {unique('pk')}"))
        assert response.status_code == 400, response.text
        assert [(e["path"], e["line"], e["column"]) for e in response.json()["errors"]] == [
            ("spec.steps[0].run.timoutSeconds", 13, 9),
            ("spec.steps[1].id", 14, 7),
            ("spec.steps[2].when", 17, 7),
            ("spec.steps[2].gate.approval.id", 20, 11),
        ]

    async def test_publishing_takes_admin(self, http: httpx.AsyncClient) -> None:
        for headers in (APPROVER, READER):
            response = await http.post(
                PACKS, json={"manifest": manifest(unique("pk"), "1.0.0")}, headers=headers
            )
            assert response.status_code == 403

    async def test_signed_by_a_trusted_key(self, http: httpx.AsyncClient) -> None:
        text = manifest(unique("pk"), "1.0.0")
        signed = await publish(http, text, signature=sign_pack(text.encode(), PACK_SIGNER))
        assert signed.status_code == 201, signed.text
        assert signed.json()["signedBy"] == PACK_SIGNER.key_id

        stranger = parse_private_pem(generate_private_pem(), "stranger")
        text = manifest(unique("pk"), "1.0.0")
        response = await publish(http, text, signature=sign_pack(text.encode(), stranger))
        assert response.status_code == 400
        assert error_code(response) == "invalid_pack_signature"
        # A signature over other bytes than the manifest published.
        response = await publish(
            http, text, signature=sign_pack(text.encode() + b"\n# more", PACK_SIGNER)
        )
        assert error_code(response) == "invalid_pack_signature"
        response = await publish(http, text, signature={"payload": "x"})
        assert error_code(response) == "invalid_pack_signature"


class TestRequiredSignatures:
    async def test_an_operator_can_refuse_unsigned_packs(self, stack: Any) -> None:
        from api.app import create_app
        from tests.api.support import serve

        strict = stack.settings.model_copy(update={"pack_require_signatures": True})
        with serve(create_app(strict)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                text = manifest(unique("pk"), "1.0.0")
                unsigned = await publish(http, text)
                assert (unsigned.status_code, error_code(unsigned)) == (
                    400,
                    "invalid_pack_signature",
                )
                assert "requires signed packs" in unsigned.json()["error"]["message"]
                signed = await publish(http, text, signature=sign_pack(text.encode(), PACK_SIGNER))
                assert signed.status_code == 201, signed.text


class TestListAndRead:
    async def test_order_paging_and_detail(self, http: httpx.AsyncClient) -> None:
        name = unique("pk")
        for version in ("1.2.0", "1.10.0", "0.9.0"):
            assert (await publish(http, manifest(name, version))).status_code == 201
        seen: list[str] = []
        params: dict[str, Any] = {"name": name, "pageSize": 2}
        while True:
            page = (await http.get(PACKS, params=params, headers=READER)).json()
            seen += [p["version"] for p in page["packs"]]
            if not page.get("nextPageToken"):
                break
            params["pageToken"] = page["nextPageToken"]
        assert seen == ["1.10.0", "1.2.0", "0.9.0"]
        bad = await http.get(
            PACKS, params={"name": "other", "pageToken": params["pageToken"]}, headers=READER
        )
        assert bad.status_code == 400

        detail = await http.get(f"{PACKS}/{name}/versions/1.2.0", headers=READER)
        assert detail.status_code == 200
        assert detail.json()["manifest"] == manifest(name, "1.2.0")
        missing = await http.get(f"{PACKS}/{name}/versions/9.9.9", headers=READER)
        assert (missing.status_code, error_code(missing)) == (404, "pack_not_found")

    async def test_another_tenant_sees_nothing(self, http: httpx.AsyncClient) -> None:
        name = unique("pk")
        await publish(http, manifest(name, "1.0.0"))
        other = bearer("taskrunner.viewer", tenant="globex")
        listed = await http.get(PACKS, params={"name": name}, headers=other)
        assert listed.json()["packs"] == []
        response = await http.get(f"{PACKS}/{name}/versions/1.0.0", headers=other)
        assert response.status_code == 404


class TestRunsOfRegisteredPacks:
    async def test_by_name_highest_active_and_disabled(self, http: httpx.AsyncClient) -> None:
        name = unique("pk")
        v1 = (await publish(http, manifest(name, "1.0.0", "one"))).json()
        v2 = (await publish(http, manifest(name, "2.0.0", "two"))).json()

        created = await http.post(
            RUNS, json={"pack": {"name": name}, "inputs": {"who": "x"}}, headers=APPROVER
        )
        assert created.status_code == 201, created.text
        state = await wait_for_run(http, created.json()["runId"], status_is("succeeded"))
        assert (state["packVersion"], state["packDigest"]) == ("2.0.0", v2["digest"])

        disabled = await http.post(f"{PACKS}/{name}/versions/2.0.0/disable", headers=ADMIN)
        assert disabled.json()["status"] == "disabled"
        refused = await http.post(
            RUNS,
            json={"pack": {"name": name, "version": "2.0.0"}, "inputs": {"who": "x"}},
            headers=APPROVER,
        )
        assert (refused.status_code, error_code(refused)) == (409, "pack_disabled")
        fallback = await http.post(
            RUNS, json={"pack": {"name": name}, "inputs": {"who": "x"}}, headers=APPROVER
        )
        assert fallback.json()["packDigest"] == v1["digest"]
        await http.post(f"{PACKS}/{name}/versions/2.0.0/enable", headers=ADMIN)

        simulated = await http.post(
            "/v1/task-runner/simulations",
            json={"pack": {"name": name, "version": "1.0.0"}, "inputs": {"who": "x"}},
            headers=READER,
        )
        assert simulated.status_code == 200, simulated.text

    async def test_manifest_or_pack_exactly_one(self, http: httpx.AsyncClient) -> None:
        both = await http.post(
            RUNS, json={"pack": {"name": "x"}, "manifest": "x"}, headers=APPROVER
        )
        assert (both.status_code, error_code(both)) == (400, "invalid_request")
        neither = await http.post(RUNS, json={}, headers=APPROVER)
        assert neither.status_code == 400
        unknown = await http.post(RUNS, json={"pack": {"name": unique("none")}}, headers=APPROVER)
        assert (unknown.status_code, error_code(unknown)) == (404, "pack_not_found")
        assert (await http.get(run_url("x"), headers=READER)).status_code == 404


class TestCli:
    async def test_publish_signed_list_show_run_and_schedule(
        self, http: httpx.AsyncClient, stack: Any, tmp_path: Any
    ) -> None:
        import asyncio
        import os
        import sys
        from pathlib import Path

        script = Path(sys.executable).parent / "taskrunner"
        env = {
            **os.environ,
            "TASKRUNNER_URL": stack.url,
            "TASKRUNNER_TOKEN": token("taskrunner.admin"),
        }

        async def cli(*argv: str) -> tuple[int, str, str]:
            # A subprocess, as a user runs it; not subprocess.run: the worker runs on this loop.
            process = await asyncio.create_subprocess_exec(
                str(script),
                *argv,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            assert process.returncode is not None
            return process.returncode, out.decode(), err.decode()

        name = unique("cli")
        path = tmp_path / "pack.yaml"
        path.write_text(manifest(name, "1.0.0"))
        key = tmp_path / "signer.pem"
        key.write_bytes(PACK_SIGNER.private_pem)

        code, out, err = await cli("packs", "publish", str(path), "--sign", str(key))
        assert code == 0, err
        assert f"{name}@1.0.0 sha256:" in out and f"signed by {PACK_SIGNER.key_id[:16]}" in out
        broken = tmp_path / "broken.yaml"
        broken.write_text(ONE_PASS.replace("name: demo", f"name: {unique('cli')}"))
        code, out, err = await cli("packs", "publish", str(broken))
        assert (code, out) == (2, "")
        # The service's errors, each at its place in the file, as `taskrunner validate` says.
        assert [line.split(": ", 2)[:2] for line in err.splitlines()] == [
            [f"{broken}:13:9", "spec.steps[0].run.timoutSeconds"],
            [f"{broken}:14:7", "spec.steps[1].id"],
            [f"{broken}:17:7", "spec.steps[2].when"],
            [f"{broken}:20:11", "spec.steps[2].gate.approval.id"],
        ]
        code, out, _ = await cli("packs", "list", "--name", name)
        assert out.splitlines()[0].split() == ["PACK", "STATUS", "DIGEST", "PUBLISHED", "AGE", "BY"]
        assert f"{name}@1.0.0  active" in out
        code, out, _ = await cli("packs", "list", "--name", name, "-o", "json")
        records = json.loads(out)
        assert [(r["name"], r["version"], r["status"]) for r in records] == [
            (name, "1.0.0", "active")
        ]
        code, out, _ = await cli("packs", "list", "--name", name, "-o", "wide")
        assert records[0]["digest"] in out and PACK_SIGNER.key_id in out
        code, out, _ = await cli("packs", "show", name)
        assert "builtin:echo" in out
        code, out, _ = await cli("packs", "show", f"{name}@1.0.0", "-o", "yaml")
        shown = yaml.safe_load(out)
        assert (shown["name"], shown["digest"]) == (name, records[0]["digest"])
        assert "builtin:echo" in shown["manifest"]

        code, out, err = await cli("runs", "create", f"{name}@1.0.0", "--inputs", '{"who": "cli"}')
        assert code == 0, err
        state = await wait_for_run(http, out.strip(), status_is("succeeded"))
        assert state["packDigest"].startswith("sha256:")

        schedule = unique("cli-sched")
        code, out, err = await cli(
            "schedules", "create", schedule, name, "--cron", "0 0 1 1 *", "--inputs", '{"who": "x"}'
        )
        assert code == 0, err
        assert f"{schedule}  {name}@1.0.0  active" in out
        code, out, _ = await cli("schedules", "list", "-o", "yaml")
        listed = yaml.safe_load(out)
        assert [s["cron"] for s in listed if s["scheduleId"] == schedule] == ["0 0 1 1 *"]
        code, out, _ = await cli("schedules", "list")
        row = next(line.split() for line in out.splitlines() if line.startswith(schedule + " "))
        assert row[:2] == [schedule, f"{name}@1.0.0"] and "active" in row
        assert re.fullmatch(r"\d+(ms|s|m\d\ds|h\d\dm|d\d\dh)", row[-1]), (
            row
        )  # until the next firing
        code, out, _ = await cli("schedules", "pause", schedule)
        assert "paused" in out
        code, out, _ = await cli("schedules", "show", schedule, "-o", "json")
        assert code == 0 and json.loads(out)["paused"] is True
        assert (await cli("schedules", "delete", schedule))[0] == 0
        code, _, err = await cli("schedules", "show", schedule)
        assert code == 1 and "schedule_not_found" in err
