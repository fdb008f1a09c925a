"""Evidence: a run's signed bundle (api/evidence.py), and the public key it verifies against.

The bundle is gathered from the run itself (its state, its whole log, its start input) and from
the artifact store (the captured files' digests), then signed with the service's Ed25519 key.
The key's public half is served without a token at `/.well-known/taskrunner/keys`: it is public,
and an auditor holding a bundle may have no account here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import RunId, Runs, ServicesDep, SettingsDep, Tenant, Viewer
from api.errors import ServiceKeyMissing, documented
from api.evidence import Subject, build_bundle, sha256_file
from api.routes import PREFIX
from api.schemas import EvidenceBundle
from compiler.plan import PolicyGateStep, walk
from workflows.contract.artifacts import stored_file
from workflows.contract.log_chain import chain_head
from workflows.contract.state import TERMINAL_RUN_STATUSES, PackRunInput, RunStateSnapshot
from workflows.contract.times import now_rfc3339

router = APIRouter(tags=["Evidence"])

WELL_KNOWN_KEYS = "/.well-known/taskrunner/keys"


class ServiceKeyDocument(BaseModel):
    keyid: str
    """securesystemslib's key id: the `keyid` of the DSSE signatures this key makes."""
    keytype: str = "ed25519"
    scheme: str = "ed25519"
    use: str = "evidence"
    publicKeyPem: str


class ServiceKeys(BaseModel):
    keys: list[ServiceKeyDocument]


@router.get(
    WELL_KNOWN_KEYS,
    operation_id="getServiceKeys",
    summary="The service's public signing keys (Ed25519, PEM)",
    responses=documented(503),
)
async def service_keys(services: ServicesDep) -> ServiceKeys:
    key = services.service_key
    if key is None:
        raise ServiceKeyMissing()
    return ServiceKeys(keys=[ServiceKeyDocument(keyid=key.key_id, publicKeyPem=key.public_pem)])


@router.get(
    f"{PREFIX}/runs/{{runId}}/evidence",
    operation_id="getRunEvidence",
    summary="A signed evidence bundle of the run (DSSE envelope of an in-toto Statement)",
    response_model=None,
    responses={
        200: {
            "model": EvidenceBundle,
            "description": "The bundle: `dsseEnvelope`, and the run's chained `log`",
        },
        **documented(400, 401, 403, 404, 503),
    },
)
async def run_evidence(
    principal: Viewer,
    tenant: Tenant,
    runId: RunId,
    runs: Runs,
    services: ServicesDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    key = services.service_key
    if key is None:
        raise ServiceKeyMissing()
    run_input = await runs.run_input(tenant, runId)
    state = await runs.full_state(tenant, runId)
    entries = [e.model_dump(mode="json") for e in await runs.all_logs(tenant, runId)]
    records = await runs.artifacts(tenant, runId)

    subjects: list[Subject] = []
    artifacts: list[dict[str, Any]] = []
    for record in records:
        item: dict[str, Any] = {"name": record.name, "type": record.type, "status": record.status}
        if record.type == "file" and record.status == "captured" and record.storedPath:
            path = stored_file(settings.data_dir, tenant, runId, record.storedPath)
            if path is not None:
                item["sha256"] = sha256_file(path)
                subjects.append(Subject(record.name, item["sha256"]))
        artifacts.append(item)

    predicate = evidence_predicate(run_input, state, artifacts, len(entries), chain_head(entries))
    return build_bundle(key, subjects, predicate, entries)


def evidence_predicate(
    run_input: PackRunInput,
    state: RunStateSnapshot,
    artifacts: list[dict[str, Any]],
    log_entries: int,
    log_head: str,
) -> dict[str, Any]:
    """What the bundle attests to, as plain JSON."""
    plan = run_input.plan
    policy_steps = {s.id: s for s in walk(plan.steps) if isinstance(s, PolicyGateStep)}
    return {
        "run": {
            "runId": state.runId,
            "tenant": state.tenant,
            "status": state.status,
            "finished": state.status in TERMINAL_RUN_STATUSES,
            "createdAt": state.createdAt,
            "updatedAt": state.updatedAt,
            "error": state.error,
            "requestedBy": run_input.meta.actor,
            "requestedAt": run_input.meta.requestedAt,
        },
        "pack": {
            "name": plan.pack.name,
            "version": plan.pack.version,
            "digest": run_input.meta.packDigest,
        },
        "planHash": run_input.planHash,
        "plan": plan.model_dump(mode="json"),
        "inputs": plan.inputs,
        "approvals": [
            {
                "approvalId": a.approvalId,
                "stepId": a.stepId,
                "status": a.status,
                "grants": a.grants,
                "requiredApprovals": a.requiredApprovals,
                "requestedAt": a.requestedAt,
                "decisions": [
                    {
                        # Who was counted (actorId, seat), how it arrived (via), when.
                        **d.model_dump(mode="json"),
                        "via": d.via or ("link" if d.tokenId else None),
                    }
                    for d in a.decisions
                ],
            }
            for a in state.approvals
        ],
        "policies": [
            {
                "stepId": s.stepId,
                "policyId": policy_steps[s.templateId or s.stepId].policyId
                if (s.templateId or s.stepId) in policy_steps
                else None,
                "status": s.status,
                "statusReason": s.statusReason,
            }
            for s in state.steps
            if s.kind in ("GatePolicy", "gate.policy")
        ],
        "steps": [
            {
                "stepId": s.stepId,
                "kind": s.kind,
                "status": s.status,
                "attempts": s.attempts,
                "statusReason": s.statusReason,
                "lastTransitionAt": s.lastTransitionAt,
            }
            for s in state.steps
        ],
        "artifacts": artifacts,
        "log": {"entries": log_entries, "chainHead": log_head},
        "generatedAt": now_rfc3339(),
    }
