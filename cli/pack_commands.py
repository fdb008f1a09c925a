"""Pack commands: `validate`, `plan` and `simulate` a pack file, with nothing running.

PACK is a path, or `-` for standard input. `--inputs` is an inline JSON object or the path of a
JSON or YAML file holding one. The operator's sandbox ceilings come from the same variables the
API and the worker read (`TASKRUNNER_SANDBOX_MAX_*`, `TASKRUNNER_SANDBOX_ALLOW_OPEN`), so a pack
asking for more is refused here with the field's path, as the API would refuse it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.main import EXIT_OK, CliError, Subcommands
from compiler import Ceilings, CompiledPlan, ManifestError, compile_manifest
from compiler.compile import build_plan, load_lenient
from compiler.executors import ExecutorCatalog
from compiler.hashing import plan_document
from compiler.loader import MAX_MANIFEST_BYTES, load_yaml, positions
from compiler.plan import walk
from compiler.simulation import SimulationResponse, SimulationStep, simulate


def register(subcommands: Subcommands) -> None:
    validate = subcommands.add_parser(
        "validate",
        help="check a pack; errors print as `FILE:LINE:COLUMN: path: message`",
        description="Check a pack. Without --inputs, required inputs are not asked for.",
    )
    _pack_arguments(validate)
    validate.set_defaults(handler=validate_command)

    plan = subcommands.add_parser(
        "plan",
        help="print a pack's planHash and compiled plan",
        description="Compile a pack: the plan as JSON on stdout (for jq and files), "
        "`planHash: sha256:...` on stderr.",
    )
    _pack_arguments(plan)
    plan.set_defaults(handler=plan_command)

    sim = subcommands.add_parser(
        "simulate",
        help="show what a run would do, without running it",
        description="Simulate a run: statuses, iterations, approvals and a history estimate.",
    )
    _pack_arguments(sim)
    sim.add_argument(
        "--output",
        "-o",
        choices=("json", "table"),
        default="json",
        help="json: the API's SimulationResponse; table: a tree for people (default: json)",
    )
    sim.set_defaults(handler=simulate_command)


def _pack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pack", metavar="PACK", help="the pack's YAML file, or - for stdin")
    parser.add_argument(
        "--inputs",
        "-i",
        metavar="FILE|JSON",
        help="input values: a JSON object, or a JSON or YAML file holding one",
    )
    parser.add_argument(
        "--any-executor",
        action="store_true",
        help="do not check `uses` and `with` against the executors installed here (for a pack "
        "meant for a service with executors this machine lacks)",
    )


def executors(args: argparse.Namespace) -> ExecutorCatalog | None:
    """The executors installed here (builtins and entry points), the catalog `uses` and `with`
    are checked against, as the API checks them against the service's."""
    if args.any_executor:
        return None
    from cli.catalog import installed_executors

    return installed_executors()


def ceilings() -> Ceilings:
    """The operator's ceilings, from the environment as the API and the worker read them."""
    from pydantic import ValidationError

    from workflows.contract.ceilings import CeilingSettings

    try:
        return CeilingSettings().ceilings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TASKRUNNER_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid sandbox ceilings: {problems}") from None


def validate_command(args: argparse.Namespace) -> int:
    text = read_pack(args.pack)
    inputs = read_inputs(args.inputs)
    note = ""
    try:
        # Every error in one pass: unknown keys do not hide what the later checks find.
        lenient = load_lenient(text)
        manifest, errors, _ = lenient
        if manifest is None:
            raise ManifestError(errors)
        try:
            plan = build_plan(
                manifest, inputs, known_executors=executors(args), ceilings=ceilings()
            )
            note = f", {len(walk(plan.steps))} steps"
        except ManifestError as exc:
            found = lenient.later(exc.errors)
            if args.inputs is None:
                # Only the manifest is being checked: a required input nobody gave is not an
                # error yet. (Without given inputs, every other input error has a `spec.` path.)
                found = [e for e in found if not e.path.startswith("inputs.")]
                note = ", inputs not checked"
            errors = [*errors, *found]
        if errors:
            raise ManifestError(errors)
    except ManifestError as exc:
        raise _named(exc.located(lambda: positions(text)), args.pack) from None
    print(f"valid: {manifest.metadata.name} {manifest.metadata.version}{note}")
    return EXIT_OK


def plan_command(args: argparse.Namespace) -> int:
    compiled = _compile(args)
    # The hash on stderr keeps stdout one JSON document: `taskrunner plan x.yaml | jq` works.
    print(f"planHash: {compiled.plan_hash}", file=sys.stderr)
    print(json.dumps(plan_document(compiled.plan), indent=2, ensure_ascii=False))
    return EXIT_OK


def simulate_command(args: argparse.Namespace) -> int:
    compiled = _compile(args)
    result = simulate(compiled.plan, compiled.plan_hash)
    if args.output == "table":
        print(render_table(result))
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return EXIT_OK


def _compile(args: argparse.Namespace) -> CompiledPlan:
    text = read_pack(args.pack)
    inputs = read_inputs(args.inputs)
    try:
        return compile_manifest(text, inputs, known_executors=executors(args), ceilings=ceilings())
    except ManifestError as exc:
        raise _named(exc, args.pack) from None


def _named(exc: ManifestError, pack: str) -> ManifestError:
    """The errors, printed as `FILE:LINE:COLUMN: path: message` (`<stdin>` for `-`)."""
    exc.source = "<stdin>" if pack == "-" else pack
    return exc


def read_pack(source: str) -> bytes:
    """The pack's bytes, read no further than the size cap (the compiler reports the excess)."""
    try:
        if source == "-":
            return sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1)
        with open(source, "rb") as handle:
            return handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read pack {source}: {exc.strerror or exc}") from None


def read_inputs(value: str | None) -> dict[str, Any] | None:
    """`--inputs`: an inline JSON object, or a JSON or YAML file holding one."""
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value, parse_constant=_no_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise CliError(f"--inputs is not valid JSON: {exc}") from None
    else:
        path = Path(value)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read --inputs file {value}: {exc.strerror or exc}") from None
        try:
            if path.suffix == ".json":
                data = json.loads(raw, parse_constant=_no_constant)
            else:
                data = load_yaml(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise CliError(f"--inputs file {value} is not valid JSON: {exc}") from None
        except ManifestError as exc:
            message = str(exc).replace("manifest", "file")
            raise CliError(f"--inputs file {value} is not valid YAML: {message}") from None
    if not isinstance(data, dict):
        raise CliError("--inputs must be an object of input names to values")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def render_table(result: SimulationResponse) -> str:
    """The simulation as an indented tree, one step per line, then what each policy gate's
    condition comes to (or why it is left to the run), then the warnings."""
    rows: list[tuple[str, str, str, str]] = [("STEP", "KIND", "STATUS", "REASON")]
    policies: list[str] = []

    def add(steps: list[SimulationStep], depth: int) -> None:
        for step in steps:
            if step["kind"] == "GatePolicy" and "gateMessage" in step:
                policies.append(f"policy: {step['id']}: {step['gateMessage']}")
            rows.append(
                (
                    "  " * depth + step["id"],
                    step["kind"],
                    step["status"],
                    step.get("statusReason", ""),
                )
            )
            add(step["children"], depth + 1)

    add(result["steps"], 0)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"planHash             {result['planHash']}",
        f"hasPendingApprovals  {str(result['hasPendingApprovals']).lower()}",
        f"historyEstimate      {result['historyEstimate']} events in the largest history, "
        f"{result['historyEvents']} in all",
        "",
    ]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        lines.append(f"{line}  {row[3]}".rstrip())
    lines += policies
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)
