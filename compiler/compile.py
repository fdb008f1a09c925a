"""From manifest text and inputs to a validated plan: every error found, each with its path."""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, get_args

from pydantic import ValidationError

from compiler import manifest as m
from compiler import plan as p
from compiler.ceilings import Ceilings, check_ceilings
from compiler.errors import ErrorDetail, ManifestError, join_path
from compiler.executors import ExecutorCatalog, check_run, did_you_mean
from compiler.expressions import (
    ExpressionError,
    Reference,
    references,
    secret_name,
    strip_braces,
    template_parts,
)
from compiler.hashing import MAX_SAFE_INTEGER, plan_hash
from compiler.inputs import check_schema, resolve_inputs
from compiler.loader import MAX_MANIFEST_BYTES, load_yaml, positions

DEFAULT_MAP_PARALLELISM = 10
DEFAULT_RUN_TIMEOUT_SECONDS = 3600
MAP_MAX_ITEMS = 1_000_000
"""The most items a map's `range` may count: what fanning out in levels has been run with
(docs/manifest.md). A literal list is bounded by the manifest's size, an expression's list by the
size of the run's inputs."""
# Scope names a loop variable may not take: it would hide them from the loop's steps.
RESERVED_NAMES = frozenset({"inputs", "steps", "secrets", "env"})

_PYDANTIC_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown key",
}


@dataclass(frozen=True)
class CompiledPlan:
    plan: p.Plan
    plan_hash: str


def load_manifest(text: str | bytes, *, max_bytes: int = MAX_MANIFEST_BYTES) -> m.Manifest:
    """Parse and type-check a manifest. Raises ManifestError with every structural error, each
    with its line and column."""
    try:
        manifest, errors, _ = load_lenient(text, max_bytes=max_bytes)
        if manifest is None or errors:
            raise ManifestError(errors)
        return manifest
    except ManifestError as exc:
        raise exc.located(lambda: positions(text)) from None


class Lenient(NamedTuple):
    """What `load_lenient` read: the manifest (None when it could not be repaired for the later
    checks), its structural errors, and the paths it replaced with stand-ins."""

    manifest: m.Manifest | None
    errors: list[ErrorDetail]
    stand_ins: tuple[str, ...] = ()

    def later(self, errors: Iterable[ErrorDetail]) -> list[ErrorDetail]:
        """The later checks' errors, less those about a stand-in (a stand-in step's `id` is the
        author's, so a duplicate of it is still reported), and without the ids made up for
        stand-ins of steps whose own id was bad in their lists of known steps."""
        out = []
        for error in errors:
            if any(_under(error.path, path) for path in self.stand_ins):
                continue
            message = error.message
            if _STAND_IN_ID in message:
                message = re.sub(rf"(, )?{_STAND_IN_ID}\d+__(, )?", _comma, message)
                message = message.replace("(known: )", "(known: none declared)")
            out.append(ErrorDetail(error.path, message, error.line, error.column))
        return out


def _comma(match: re.Match[str]) -> str:
    return ", " if match.group(1) and match.group(2) else ""


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith((root + ".", root + "["))


def load_lenient(text: str | bytes, *, max_bytes: int = MAX_MANIFEST_BYTES) -> Lenient:
    """The manifest and its structural errors, repaired where it can be so that the later checks
    (duplicate ids, unknown steps and approvals, expressions) still run and every error is
    reported in one pass: an unknown key is left out; a wrong `apiVersion` or `kind` is read as
    the right one; bad `metadata` as a stand-in; a bad `sandbox`, `failure`, `slo` or
    `outputs` as absent; a bad step that holds no steps as a stand-in run step with its id."""
    data = load_yaml(text, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise ManifestError.single("", "manifest must be a YAML mapping")
    try:
        return Lenient(m.Manifest.model_validate(data), [])
    except ValidationError as exc:
        errors = _from_pydantic(exc, data)
        repaired = copy.deepcopy(data)
        stand_ins: list[str] = []
        for err in exc.errors(include_url=False):
            if err["type"] == "extra_forbidden":
                _drop(repaired, list(err["loc"]))
                continue
            stand_in = _stand_in(repaired, tuple(err["loc"]))
            if stand_in is None:
                return Lenient(None, errors)
            stand_ins.append(stand_in)
        try:
            return Lenient(m.Manifest.model_validate(repaired), errors, tuple(stand_ins))
        except ValidationError:
            return Lenient(None, errors)
    except RecursionError:
        raise ManifestError.single("", "manifest is nested too deeply") from None


_STAND_IN_ID = "__invalid_step_"
_STAND_IN_METADATA = {"name": "invalid", "version": "0"}
_DROPPABLE = frozenset({"sandbox", "failure", "slo", "outputs"})
_STEP_LISTS = frozenset({"steps", "else"})
_COMPOSITE = ("parallel", "map", "loop", "conditional")


def _stand_in(data: dict[str, Any], loc: tuple[str | int, ...]) -> str | None:
    """Repair `data` at pydantic's `loc` for the later checks; the path of what was replaced
    (its errors are about the stand-in), or None when it cannot be repaired."""
    if not loc:
        return None
    # The innermost step the error is in: the last `steps`/`else` index of `loc`.
    cut = None
    if loc[0] == "spec" and len(loc) > 1 and loc[1] == "steps":
        cut = max(
            (
                i
                for i in range(2, len(loc))
                if isinstance(loc[i], int) and loc[i - 1] in _STEP_LISTS
            ),
            default=None,
        )
    dropped = _drop_optional(data, loc, -1 if cut is None else cut)
    if dropped is not None:
        return dropped
    top = loc[0]
    if top == "apiVersion" or top == "kind":
        data[top] = get_args(m.Manifest.model_fields[top].annotation)[0]  # the one Literal
        return str(top)
    if top == "metadata":
        data["metadata"] = dict(_STAND_IN_METADATA)
        return "metadata"
    spec = data.get("spec")
    if top != "spec" or len(loc) < 2 or not isinstance(spec, dict):
        return None
    if loc[1] in _DROPPABLE:
        spec.pop(loc[1], None)
        return f"spec.{loc[1]}"
    if cut is None:
        return None
    holder: Any = data
    for part in loc[:cut]:
        holder = _child(holder, part)
        if holder is _MISSING:
            return None  # a union's tag in `loc`: not a plain step list
    index = loc[cut]
    if not isinstance(holder, list) or not isinstance(index, int) or index >= len(holder):
        return None
    step = holder[index]
    if isinstance(step, dict) and any(step.get(k) is not None for k in _COMPOSITE):
        return None  # its steps would be lost with it, and read as unknown where referenced
    step_id = step.get("id") if isinstance(step, dict) else None
    if not isinstance(step_id, str) or not re.fullmatch(m.STEP_ID_PATTERN, step_id):
        step_id = f"{_STAND_IN_ID}{index}__"
    holder[index] = {"id": step_id, "run": {"uses": "builtin:noop"}}
    path = join_path(loc[: cut + 1])
    return path if step_id.startswith(_STAND_IN_ID) else f"{path}.run"


def _drop_optional(data: dict[str, Any], loc: tuple[str | int, ...], after: int) -> str | None:
    """Leave out the deepest field of `loc` that its model does not require (the pack reads as
    if it were not written), when it is inside the innermost step (past `after`) and is not a
    step's kind or a list the later checks look names up in; its path, or None."""
    models: list[type[m.Strict]] = [m.Manifest]
    holder: Any = data
    parts: list[str | int] = []
    best: tuple[Any, str, str] | None = None
    for i, part in enumerate(loc):
        if isinstance(part, int):
            holder = _child(holder, part)
            if holder is _MISSING:
                return None
            parts.append(part)
            continue
        fields = [
            (model, info)
            for model in models
            for name, info in model.model_fields.items()
            if part in (name, info.alias)
        ]
        if not fields:
            continue  # a union's tag: not in the data
        child = _child(holder, part)
        if child is _MISSING:
            break
        parts.append(part)
        keep = any(
            (model is m.Step and part in m.STEP_KIND_KEYS)
            or (model is m.Spec and part in _NAME_LISTS)
            for model, _ in fields
        )
        if i > after and not keep and not any(info.is_required() for _, info in fields):
            best = (holder, part, join_path(parts))
        holder = child
        models = [x for _, info in fields for x in _models_in(info.annotation)]
        if not models:
            break  # free-form data (`with`, a schema): no model knows its keys
    if best is None or not isinstance(best[0], dict):
        return None
    best[0].pop(best[1], None)
    return best[2]


_NAME_LISTS = frozenset({"steps", "inputs", "secrets", "approvals", "policies"})
_MISSING = object()


def _child(data: Any, part: str | int) -> Any:
    """`data[part]`, or _MISSING."""
    if isinstance(data, dict):
        return data.get(part, _MISSING)
    if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
        return data[part]
    return _MISSING


def _drop(data: Any, loc: list[str | int]) -> None:
    """Remove the key at pydantic's `loc` (whose union tags are not in the data) from `data`."""
    current = data
    for part in loc[:-1]:
        child = _child(current, part)
        if child is not _MISSING:  # else a union's tag: passed over
            current = child
    if isinstance(current, dict):
        current.pop(loc[-1], None)


def _keys_at(loc: tuple[str | int, ...]) -> list[str]:
    """The keys the manifest's models allow at pydantic's `loc`, for a "did you mean" on an
    unknown key there (union tags in `loc` are passed over)."""
    models: list[type[m.Strict]] = [m.Manifest]
    for part in loc:
        if isinstance(part, int):
            continue
        inner: list[type[m.Strict]] = []
        for model in models:
            for name, info in model.model_fields.items():
                if part in (name, info.alias):
                    inner.extend(_models_in(info.annotation))
        if inner:
            models = inner
    return sorted({info.alias or name for x in models for name, info in x.model_fields.items()})


def _models_in(annotation: Any) -> list[type[m.Strict]]:
    if isinstance(annotation, type) and issubclass(annotation, m.Strict):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def compile_manifest(
    text: str | bytes,
    inputs: Mapping[str, Any] | None = None,
    *,
    known_executors: Collection[str] | ExecutorCatalog | None = None,
    max_bytes: int = MAX_MANIFEST_BYTES,
    ceilings: Ceilings | None = None,
) -> CompiledPlan:
    """Compile a manifest with its inputs into a plan and its hash.

    `known_executors`, when given, makes an unknown `uses` a validation error (with a "did you
    mean"); given as an executor catalog (`uses` → JSON Schema of its `with`, see
    `compiler.executors`), each step's `with` is checked too. Without it an unknown executor
    is only found when the step runs. `ceilings`, when given, refuses a
    sandbox or step timeout above the operator's ceilings (see `compiler.ceilings`).
    """
    try:
        lenient = load_lenient(text, max_bytes=max_bytes)
        manifest, errors, _ = lenient
        if manifest is None:
            raise ManifestError(errors)
        try:
            plan = build_plan(manifest, inputs, known_executors=known_executors, ceilings=ceilings)
        except ManifestError as exc:
            raise ManifestError([*errors, *lenient.later(exc.errors)]) from None
        if errors:
            raise ManifestError(errors)
        return CompiledPlan(plan=plan, plan_hash=plan_hash(plan))
    except ManifestError as exc:
        raise exc.located(lambda: positions(text)) from None


def build_plan(
    manifest: m.Manifest,
    inputs: Mapping[str, Any] | None = None,
    *,
    known_executors: Collection[str] | ExecutorCatalog | None = None,
    ceilings: Ceilings | None = None,
) -> p.Plan:
    if ceilings is not None:
        errors = check_ceilings(manifest, ceilings, DEFAULT_RUN_TIMEOUT_SECONDS)
        if errors:
            raise ManifestError(errors)
    return _Builder(manifest, known_executors).build(inputs)


def _from_pydantic(exc: ValidationError, data: Any) -> list[ErrorDetail]:
    merged: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        path = _data_path(err["loc"], data, err["type"])
        msg = _PYDANTIC_MESSAGES.get(err["type"], err["msg"])
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "string_type" and isinstance(err.get("input"), bool):
            msg += " (YAML reads unquoted true/false as booleans: quote it)"
        if err["type"] == "extra_forbidden" and err["loc"]:
            msg += did_you_mean(str(err["loc"][-1]), _keys_at(tuple(err["loc"][:-1])))
        if err["type"] == "literal_error" and isinstance(err.get("input"), str):
            # pydantic names the allowed values quoted in its context: `'a', 'b' or 'c'`.
            allowed = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
            if len(allowed) > 1:  # with one, the message already says it
                msg += did_you_mean(err["input"], allowed)
        bucket = merged.setdefault(path, [])
        if msg not in bucket:
            bucket.append(msg)
    return [ErrorDetail(path, " or ".join(msgs)) for path, msgs in merged.items()]


def _data_path(loc: Iterable[str | int], data: Any, kind: str) -> str:
    """The JSON path of an error, keeping only the parts of pydantic's `loc` that name data.

    `loc` also holds union member tags (`str`, `list[any]`); those are dropped.
    """
    parts: list[str | int] = []
    current = data
    loc = list(loc)
    for i, part in enumerate(loc):
        in_dict = isinstance(current, dict) and part in current
        if in_dict or (
            isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        ):
            parts.append(part)
            current = current[part]
        elif kind == "missing" and i == len(loc) - 1:
            parts.append(part)
    return join_path(parts)


@dataclass(frozen=True)
class _Scope:
    """What an expression at some place may read, besides the steps in `_Builder.visible`."""

    iteration_vars: frozenset[str]
    allow_secrets: bool = False
    any_step: bool = False


@dataclass(frozen=True)
class _Common:
    """What every kind of step takes from the manifest step alike."""

    id: str
    when: str | bool | None
    continueOnError: bool | None

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "when": self.when}


class _Builder:
    def __init__(
        self, manifest: m.Manifest, known_executors: Collection[str] | ExecutorCatalog | None
    ) -> None:
        self.manifest = manifest
        self.spec = manifest.spec
        self.known_executors: ExecutorCatalog | None = (
            known_executors
            if known_executors is None or isinstance(known_executors, Mapping)
            else dict.fromkeys(known_executors)
        )
        self.errors: list[ErrorDetail] = []
        self.step_paths: dict[str, str] = {}
        # Ids of the steps that run before the point being built. One mutable set, grown and
        # shrunk as the builder walks, keeps a pack with thousands of steps linear.
        self.visible: set[str] = set()
        self.input_names = {i.name for i in self.spec.inputs}
        self.secret_names = {s.name for s in self.spec.secrets}
        self.approvals = {a.id: a for a in self.spec.approvals}
        self.policies = {pol.id: pol for pol in self.spec.policies}

    def error(self, path: str, message: str) -> None:
        self.errors.append(ErrorDetail(path, message))

    # ----------------------------------------------------------------- whole pack

    def build(self, given_inputs: Mapping[str, Any] | None) -> p.Plan:
        spec = self.spec
        self._check_unique("spec.inputs", [i.name for i in spec.inputs], "name", "input")
        self._check_unique("spec.secrets", [s.name for s in spec.secrets], "name", "secret")
        self._check_unique("spec.approvals", [a.id for a in spec.approvals], "id", "approval")
        self._check_unique("spec.policies", [x.id for x in spec.policies], "id", "policy")
        for index, approval in enumerate(spec.approvals):
            self._check_quorum(approval, f"spec.approvals[{index}]")
        self._check_unique("spec.outputs", [o.name for o in spec.outputs], "name", "output")
        for index, defn in enumerate(spec.inputs):
            self.errors.extend(check_schema(defn, f"spec.inputs[{index}].schema"))
        values, input_errors = resolve_inputs(spec.inputs, given_inputs)

        self._collect_ids(_indexed(spec.steps, "spec.steps"))
        steps = self._steps(spec.steps, "spec.steps", _Scope(frozenset()))[0]

        every_step = _Scope(frozenset(), any_step=True)
        policies = []
        for index, pol in enumerate(spec.policies):
            cond = self._condition(pol.condition, f"spec.policies[{index}].condition", every_step)
            policies.append(p.PolicySpec(id=pol.id, version=pol.version, condition=cond))
        outputs = [
            self._output(o, f"spec.outputs[{i}]", every_step) for i, o in enumerate(spec.outputs)
        ]

        # Manifest errors first, in document order, then the errors of the inputs given.
        errors = self.errors + input_errors
        if errors:
            raise ManifestError(errors)
        return p.Plan(
            pack=p.PackRef(
                name=self.manifest.metadata.name, version=self.manifest.metadata.version
            ),
            inputs=values,
            secrets=tuple(s.name for s in spec.secrets),
            approvals=tuple(
                p.ApprovalSpec(
                    id=a.id,
                    grants=tuple(a.grants),
                    requiredApprovals=_required_approvals(a),
                    expiresAfterSeconds=a.expiresAfterSeconds,
                    onExpiry=a.onExpiry,
                    message=a.message,
                    allowRequester=a.allowRequester,
                    quorum=tuple(
                        p.QuorumGroup(grant=g.grant, requiredApprovals=g.requiredApprovals)
                        for g in a.quorum
                    ),
                )
                for a in spec.approvals
            ),
            policies=tuple(policies),
            failure=p.FailurePolicy(**spec.failure.model_dump()),
            sandbox=p.Sandbox(
                mode=spec.sandbox.mode,
                egressAllowlist=tuple(spec.sandbox.egressAllowlist),
                cpuLimitMillicores=spec.sandbox.cpuLimitMillicores,
                memoryLimitMiB=spec.sandbox.memoryLimitMiB,
                quotaSeconds=spec.sandbox.quotaSeconds,
            ),
            slo=p.Slo(**spec.slo.model_dump()) if spec.slo else None,
            steps=tuple(steps),
            outputs=tuple(outputs),
        )

    def _check_quorum(self, approval: m.Approval, path: str) -> None:
        """Each grant once; `requiredApprovals`, when written, leaves room for every seat."""
        self._check_unique(
            f"{path}.quorum", [g.grant for g in approval.quorum], "grant", "quorum grant"
        )
        seats = sum(g.requiredApprovals for g in approval.quorum)
        if "requiredApprovals" in approval.model_fields_set and approval.requiredApprovals < seats:
            self.error(
                f"{path}.requiredApprovals",
                f"{approval.requiredApprovals} is fewer than the quorum's {seats} seats "
                "(each seat is a distinct person); omit it to require exactly the seats",
            )

    def _check_unique(self, path: str, names: list[str], key: str, what: str) -> None:
        first: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in first:
                self.error(
                    f"{path}[{index}].{key}",
                    f"duplicate {what} {name!r} (first at {path}[{first[name]}].{key})",
                )
            else:
                first[name] = index

    def _collect_ids(self, steps: list[tuple[str, m.Step]]) -> None:
        for here, step in steps:
            if step.id in self.step_paths:
                self.error(
                    f"{here}.id",
                    f"duplicate step id {step.id!r} (first at {self.step_paths[step.id]}.id)",
                )
            else:
                self.step_paths[step.id] = here
            self._collect_ids(_children(step, here))

    # ----------------------------------------------------------------- steps

    def _steps(
        self, steps: list[m.Step], path: str, scope: _Scope
    ) -> tuple[list[p.PlanStep], list[str]]:
        """Build a sequence: each step sees the ones before it.

        Returns the steps and the ids the sequence makes visible to what follows it; leaves
        `self.visible` as it found it.
        """
        built: list[p.PlanStep] = []
        added: list[str] = []
        for index, step in enumerate(steps):
            plan_step, defined = self._step(step, f"{path}[{index}]", scope)
            built.append(plan_step)
            new = [d for d in defined if d not in self.visible]
            self.visible.update(new)
            added += new
        self.visible.difference_update(added)
        return built, added

    def _step(self, step: m.Step, path: str, scope: _Scope) -> tuple[p.PlanStep, list[str]]:
        """Build one step. Returns it and the ids it makes visible to later steps."""
        when = self._condition(step.when, f"{path}.when", scope) if step.when is not None else None
        common = _Common(step.id, when, step.continueOnError)
        if step.run is not None:
            return self._run(common, step.run, path, scope), [step.id]
        if step.parallel is not None:
            return self._parallel(common, step.parallel, path, scope)
        if step.map is not None:
            # Iteration steps are not visible outside the map.
            return self._map(common, step.map, path, scope), [step.id]
        if step.loop is not None:
            return self._loop(common, step.loop, path, scope), [step.id]
        if step.conditional is not None:
            return self._conditional(common, step.conditional, path, scope)
        gate = step.gate
        assert gate is not None  # the manifest model guarantees exactly one kind
        if gate.approval is not None:
            return self._approval_gate(common, gate.approval, path), [step.id]
        assert gate.policy is not None
        return self._policy_gate(common, gate.policy, f"{path}.gate.policy", scope)

    def _continue_on_error(self, common: _Common, *block: bool | None) -> bool:
        """The step's own setting, else its block's, else the pack's failure policy."""
        return _first(common.continueOnError, *block, self.spec.failure.continueOnError)

    def _run(self, common: _Common, run: m.RunBody, path: str, scope: _Scope) -> p.RunStep:
        fail = self.spec.failure
        self._check_run(run, f"{path}.run")
        with_scope = _Scope(scope.iteration_vars, allow_secrets=True)
        secrets = self._templates(run.with_, f"{path}.run.with", with_scope)
        retries = run.retries
        return p.RunStep(
            **common.fields(),
            continueOnError=self._continue_on_error(common),
            uses=run.uses,
            with_=run.with_,
            timeoutSeconds=run.timeoutSeconds or DEFAULT_RUN_TIMEOUT_SECONDS,
            maxAttempts=retries.maxAttempts if retries else fail.maxAttempts,
            backoffSeconds=retries.backoffSeconds if retries else fail.backoffSeconds,
            secrets=tuple(sorted(secrets)),
        )

    def _parallel(
        self, common: _Common, par: m.ParallelBody, path: str, scope: _Scope
    ) -> tuple[p.ParallelStep, list[str]]:
        kids: list[p.PlanStep] = []
        defined = [common.id]
        for index, child in enumerate(par.steps):
            # Siblings run at the same time: none of them is "earlier" than another.
            built, ids = self._step(child, f"{path}.parallel.steps[{index}]", scope)
            kids.append(built)
            defined += ids
        step = p.ParallelStep(
            **common.fields(),
            continueOnError=self._continue_on_error(common, par.continueOnError),
            steps=tuple(kids),
            maxParallel=par.maxParallel or len(kids),
        )
        return step, defined

    def _map(self, common: _Common, mp: m.MapBody, path: str, scope: _Scope) -> p.MapStep:
        items: str | tuple[Any, ...] | p.ItemsRange
        where = f"{path}.map.items"
        src = mp.items
        # The `{expression|range|static}` forms of an expression or a list compile to the plan
        # of the plain form: one meaning, one plan, one planHash.
        if isinstance(src, m.ItemsSource):
            if src.expression is not None:
                src, where = src.expression, f"{where}.expression"
            elif src.static is not None:
                src, where = src.static, f"{where}.static"
        if isinstance(src, str):
            items = self._expression(src, where, scope)
        elif isinstance(src, list):
            items = tuple(src)  # as long as the manifest's size allows
        else:
            r = src.range
            assert r is not None  # ItemsSource holds exactly one
            items = p.ItemsRange(start=r.start, end=r.end, step=r.step)
            if r.count == 0:
                way = "down" if r.step < 0 else "up"
                self.error(
                    f"{where}.range",
                    f"range from {r.start} to {r.end} by {r.step} has no items (`end` is left "
                    f"out, and a step of {r.step} counts {way})",
                )
            self._map_size(r.count, f"{where}.range")
            for key in ("start", "end", "step"):
                if abs(getattr(r, key)) > MAX_SAFE_INTEGER:
                    self.error(
                        f"{where}.range.{key}",
                        f"beyond ±{MAX_SAFE_INTEGER} (2^53 - 1): JSON cannot carry it exactly",
                    )
        inner = _Scope(scope.iteration_vars | {"item", "index"})
        template, _ = self._step(mp.step, f"{path}.map.step", inner)
        return p.MapStep(
            **common.fields(),
            continueOnError=self._continue_on_error(common, mp.continueOnError),
            items=items,
            step=template,
            maxParallel=mp.maxParallel or DEFAULT_MAP_PARALLELISM,
        )

    def _map_size(self, count: int, path: str) -> None:
        if count > MAP_MAX_ITEMS:
            self.error(
                path,
                f"{count:,} items, more than a map may have ({MAP_MAX_ITEMS:,}): split the work "
                "over several maps or runs",
            )

    def _loop(self, common: _Common, lp: m.LoopBody, path: str, scope: _Scope) -> p.LoopStep:
        src = lp.items
        expr = rng = static = None
        if src.expression is not None:
            expr = self._expression(src.expression, f"{path}.loop.items.expression", scope)
        elif src.range is not None:
            r = src.range
            rng = (r.start, r.end, r.step)
            count = r.count
            if count > lp.maxIterations:
                self.error(
                    f"{path}.loop.items.range",
                    f"range has {count} items, more than maxIterations ({lp.maxIterations})",
                )
        elif src.static is not None:
            static = tuple(src.static)
            if len(static) > lp.maxIterations:
                self.error(
                    f"{path}.loop.items.static",
                    f"{len(static)} items, more than maxIterations ({lp.maxIterations})",
                )
        if lp.iterator == lp.index:
            self.error(f"{path}.loop.index", "index and iterator need different names")
        for key, name in (("iterator", lp.iterator), ("index", lp.index)):
            if name in RESERVED_NAMES:
                self.error(f"{path}.loop.{key}", f"{name!r} is a reserved scope name")
        inner = _Scope(scope.iteration_vars | {lp.iterator, lp.index})
        body, _ = self._steps(lp.steps, f"{path}.loop.steps", inner)
        return p.LoopStep(
            **common.fields(),
            continueOnError=self._continue_on_error(common, lp.continueOnError),
            itemsExpression=expr,
            itemsRange=rng,
            itemsStatic=static,
            iterator=lp.iterator,
            index=lp.index,
            maxIterations=lp.maxIterations,
            aggregation=lp.aggregation,
            steps=tuple(body),
        )

    def _conditional(
        self, common: _Common, cd: m.ConditionalBody, path: str, scope: _Scope
    ) -> tuple[p.ConditionalStep, list[str]]:
        branches = []
        defined = [common.id]
        for index, branch in enumerate(cd.branches):
            bpath = f"{path}.conditional.branches[{index}]"
            cond = self._condition(branch.condition, f"{bpath}.condition", scope)
            body, ids = self._steps(branch.steps, f"{bpath}.steps", scope)
            branches.append(p.BranchSpec(condition=cond, steps=tuple(body)))
            defined += ids
        else_steps, ids = self._steps(cd.else_, f"{path}.conditional.else", scope)
        step = p.ConditionalStep(
            **common.fields(),
            continueOnError=self._continue_on_error(common),
            branches=tuple(branches),
            elseSteps=tuple(else_steps),
            outputUnion=cd.outputUnion,
        )
        return step, defined + ids

    def _approval_gate(self, common: _Common, ap: m.ApprovalGate, path: str) -> p.ApprovalGateStep:
        if ap.id not in self.approvals:
            self.error(f"{path}.gate.approval.id", _unknown("approval", ap.id, self.approvals))
        declared = self.approvals.get(ap.id)
        return p.ApprovalGateStep(
            **common.fields(),
            continueOnError=self._continue_on_error(common),
            approvalId=ap.id,
            message=ap.message or (declared.message if declared else None),
        )

    def _policy_gate(
        self, common: _Common, pg: m.PolicyGate, gpath: str, scope: _Scope
    ) -> tuple[p.PolicyGateStep, list[str]]:
        declared_policy = self.policies.get(pg.policy)
        if declared_policy is None:
            self.error(f"{gpath}.policy", _unknown("policy", pg.policy, self.policies))
        elif pg.version is not None and pg.version != declared_policy.version:
            self.error(
                f"{gpath}.version",
                f"policy {pg.policy!r} is declared with version {declared_policy.version!r}",
            )
        if pg.failureAction == "requestOverride" and not pg.approvalId:
            self.error(f"{gpath}.approvalId", "failureAction requestOverride needs approvalId")
        if pg.approvalId and pg.approvalId not in self.approvals:
            self.error(f"{gpath}.approvalId", _unknown("approval", pg.approvalId, self.approvals))
        else_steps, ids = self._steps(pg.else_, f"{gpath}.else", scope)
        if pg.else_ and pg.failureAction != "branch":
            self.error(f"{gpath}.else", "`else` steps run only with failureAction branch")
        step = p.PolicyGateStep(
            **common.fields(),
            continueOnError=self._continue_on_error(common),
            policyId=pg.policy,
            policyVersion=pg.version or (declared_policy.version if declared_policy else "1"),
            failureAction=pg.failureAction,
            retryCount=pg.retryCount,
            approvalId=pg.approvalId,
            elseSteps=tuple(else_steps),
        )
        return step, [common.id, *ids]

    def _check_run(self, run: m.RunBody, path: str) -> None:
        if self.known_executors is not None:
            self.errors.extend(check_run(self.known_executors, run.uses, run.with_, path))

    def _output(self, out: m.Output, path: str, scope: _Scope) -> p.OutputSpec:
        expression = None
        if out.expression is not None:
            expression = self._expression(out.expression, f"{path}.expression", scope)
        if out.path is not None:
            norm = posixpath.normpath(out.path)
            if (
                out.path.startswith(("/", "\\"))
                or norm == ".."
                or norm.startswith("../")
                or "\\" in out.path
                or "\x00" in out.path
            ):
                self.error(f"{path}.path", "must be a relative path inside the run's workspace")
        return p.OutputSpec(name=out.name, type=out.type, path=out.path, expression=expression)

    # ----------------------------------------------------------------- expressions

    def _condition(self, value: str | bool, path: str, scope: _Scope) -> str | bool:
        if isinstance(value, bool):
            return value
        return self._expression(value, path, scope)

    def _expression(self, text: str, path: str, scope: _Scope) -> str:
        expr = strip_braces(text)
        self._check_expression(expr, path, scope)
        return expr

    def _templates(self, value: Any, path: str, scope: _Scope) -> set[str]:
        """Check every `{{ }}` in a value; returns the secrets it names."""
        secrets: set[str] = set()
        if isinstance(value, str):
            for expr in template_parts(value):
                name = secret_name(expr)
                if name is not None and scope.allow_secrets:
                    if name not in self.secret_names:
                        self.error(path, _unknown("secret", name, self.secret_names))
                    secrets.add(name)
                else:
                    self._check_expression(expr, path, scope)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                secrets |= self._templates(item, f"{path}[{index}]", scope)
        elif isinstance(value, dict):
            for key, item in value.items():
                secrets |= self._templates(item, join_path([path, str(key)]), scope)
        return secrets

    def _check_expression(self, expr: str, path: str, scope: _Scope) -> None:
        try:
            refs = _references(expr)
        except ExpressionError as exc:
            self.error(path, str(exc))
            return
        roots = {"inputs", "steps", *scope.iteration_vars}
        for ref in refs:
            if ref.root == "secrets":
                self.error(
                    path,
                    "secrets may only be used as {{ secrets.NAME }} inside a run step's `with`",
                )
            elif ref.root not in roots:
                allowed = ", ".join(sorted(roots))
                self.error(path, f"unknown name {ref.root!r} in expression (allowed: {allowed})")
            elif ref.root == "inputs" and ref.name is not None and ref.name not in self.input_names:
                self.error(path, _unknown("input", ref.name, self.input_names))
            elif ref.root == "steps" and ref.name is not None:
                if ref.name not in self.step_paths:
                    self.error(path, _unknown("step", ref.name, self.step_paths))
                elif not scope.any_step and ref.name not in self.visible:
                    self.error(path, f"step {ref.name!r} does not run before this point")


@lru_cache(maxsize=4096)
def _references(expression: str) -> tuple[Reference, ...]:
    # Packs repeat expressions (`{{ item }}`, `{{ inputs.target }}`): parse each text once.
    return tuple(references(expression))


def _first(*values: bool | None) -> bool:
    return next(v for v in values if v is not None)  # the last value is never None


def _unknown(what: str, name: str, known: Collection[str]) -> str:
    names = ", ".join(sorted(known)[:20]) or "none declared"
    return f"unknown {what} {name!r}{did_you_mean(name, known)} (known: {names})"


def _indexed(steps: list[m.Step], path: str) -> list[tuple[str, m.Step]]:
    return [(f"{path}[{index}]", step) for index, step in enumerate(steps)]


def _children(step: m.Step, path: str) -> list[tuple[str, m.Step]]:
    """The steps directly inside a step, each with its path."""
    if step.parallel is not None:
        return _indexed(step.parallel.steps, f"{path}.parallel.steps")
    if step.map is not None:
        return [(f"{path}.map.step", step.map.step)]  # one template, not a list
    if step.loop is not None:
        return _indexed(step.loop.steps, f"{path}.loop.steps")
    if step.conditional is not None:
        found = []
        for i, branch in enumerate(step.conditional.branches):
            found += _indexed(branch.steps, f"{path}.conditional.branches[{i}].steps")
        return found + _indexed(step.conditional.else_, f"{path}.conditional.else")
    if step.gate is not None and step.gate.policy is not None:
        return _indexed(step.gate.policy.else_, f"{path}.gate.policy.else")
    return []


__all__ = ["CompiledPlan", "build_plan", "compile_manifest", "load_manifest"]


def _required_approvals(approval: m.Approval) -> int:
    """Distinct approvers the gate needs: as written, else at least one per quorum seat."""
    seats = sum(g.requiredApprovals for g in approval.quorum)
    if "requiredApprovals" in approval.model_fields_set:
        return approval.requiredApprovals
    return max(approval.requiredApprovals, seats)
