"""Evidence commands: `taskrunner keys`, `taskrunner evidence get` and `taskrunner evidence verify`.

`keys` prints the public key the API signs evidence with (from its well-known URL), and
`keys generate FILE` makes a new Ed25519 private key for an operator to configure
(TASKRUNNER_SERVICE_KEY_FILE). `evidence get RUN` saves a run's bundle (and with `--artifacts
DIR` its captured files); `evidence verify BUNDLE` checks a saved bundle offline: the signature
against `--key` (a PEM file; else the key the API at TASKRUNNER_URL serves), the log's hash
chain, and with `--artifacts DIR` every file's sha256. It exits 1 naming the first thing that
does not match, 0 when everything does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.client_commands import api_options, api_session
from cli.main import EXIT_ERROR, EXIT_OK, CliError, Subcommands


def register(subcommands: Subcommands) -> None:
    common = api_options()

    keys = subcommands.add_parser(
        "keys",
        parents=[common],
        help="print the service's public signing key (PEM), or generate a key",
        description="Print the Ed25519 public key the API signs evidence bundles with.",
    )
    keys.add_argument("--json", action="store_true", help="print the well-known document as is")
    keys.set_defaults(handler=keys_command)
    key_actions = keys.add_subparsers(title="commands", metavar="COMMAND", dest="keys")
    generate = key_actions.add_parser(
        "generate",
        help="write a new Ed25519 private key (PEM, mode 0600) for TASKRUNNER_SERVICE_KEY_FILE",
        description="Write a new Ed25519 private key; its public half goes to stdout.",
    )
    generate.add_argument("file", type=Path, help="where to write it (must not exist)")
    generate.set_defaults(handler=generate_command)

    evidence = subcommands.add_parser(
        "evidence",
        help="fetch and verify signed evidence bundles of runs",
        description="Fetch a run's signed evidence bundle, or verify one offline.",
    )
    actions = evidence.add_subparsers(
        title="commands", metavar="COMMAND", dest="evidence", required=True
    )
    get = actions.add_parser(
        "get", parents=[common], help="save a run's evidence bundle", description="Save a bundle."
    )
    get.add_argument("run", help="the run id")
    get.add_argument("-o", "--output", type=Path, help="bundle file (default: stdout)")
    get.add_argument("--artifacts", type=Path, help="also download the run's files into DIR")
    get.set_defaults(handler=get_command)

    verify = actions.add_parser(
        "verify",
        parents=[common],
        help="verify a bundle: signature, log chain, artifact digests",
        description="Verify a bundle; exit 1 naming the first mismatch.",
    )
    verify.add_argument("bundle", type=Path, help="the bundle file (- for stdin)")
    verify.add_argument("--artifacts", type=Path, help="a folder holding the run's files by name")
    verify.add_argument(
        "--key", type=Path, help="the trusted public key, PEM (default: the API's served key)"
    )
    verify.set_defaults(handler=verify_command)


def _served_keys(args: argparse.Namespace) -> dict[str, Any]:
    from api.routes.evidence import WELL_KNOWN_KEYS

    with api_session(args) as api:
        document: dict[str, Any] = api.call("GET", api.url + WELL_KNOWN_KEYS)
    return document


def keys_command(args: argparse.Namespace) -> int:
    document = _served_keys(args)
    if args.json:
        print(json.dumps(document, indent=2))
        return EXIT_OK
    for key in document.get("keys", []):
        print(f"# keyid {key['keyid']} ({key.get('use', '')})")
        print(key["publicKeyPem"], end="")
    return EXIT_OK


def generate_command(args: argparse.Namespace) -> int:
    from workflows.contract.service_key import generate_private_pem, parse_private_pem

    pem = generate_private_pem()
    try:
        descriptor = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{args.file} exists; choose another file") from None
    except OSError as exc:
        raise CliError(f"cannot write {args.file}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    key = parse_private_pem(pem, str(args.file))
    print(f"# keyid {key.key_id}")
    print(key.public_pem, end="")
    return EXIT_OK


def get_command(args: argparse.Namespace) -> int:
    with api_session(args) as api:
        return _get(api, args)


def _get(api: Any, args: argparse.Namespace) -> int:
    bundle = api.call("GET", f"/runs/{args.run}/evidence")
    text = json.dumps(bundle, indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    if args.artifacts:
        args.artifacts.mkdir(parents=True, exist_ok=True)
        for record in api.call("GET", f"/runs/{args.run}/artifacts"):
            if record.get("type") != "file" or record.get("status") != "captured":
                continue
            name = Path(record["name"]).name
            response = api.http.get(f"/runs/{args.run}/artifacts/{record['name']}")
            api.check(response)
            (args.artifacts / name).write_bytes(response.content)
    return EXIT_OK


def verify_command(args: argparse.Namespace) -> int:
    from api.evidence import EvidenceMismatch, verify_bundle
    from workflows.contract.service_key import ServiceKeyError, parse_public_pem

    try:
        text = sys.stdin.read() if str(args.bundle) == "-" else args.bundle.read_text()
        bundle = json.loads(text)
    except OSError as exc:
        raise CliError(f"cannot read {args.bundle}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"{args.bundle} is not JSON: {exc}") from None
    try:
        if args.key:
            keys = [parse_public_pem(args.key.read_bytes(), str(args.key))]
        else:
            served = _served_keys(args)
            keys = [
                parse_public_pem(k["publicKeyPem"].encode(), "the served key")
                for k in served.get("keys", [])
            ]
    except OSError as exc:
        raise CliError(f"cannot read {args.key}: {exc.strerror}") from None
    except ServiceKeyError as exc:
        raise CliError(str(exc)) from None
    if args.artifacts is not None and not args.artifacts.is_dir():
        raise CliError(f"{args.artifacts} is not a folder")
    try:
        verified = verify_bundle(bundle, keys, args.artifacts)
    except EvidenceMismatch as exc:
        print(f"taskrunner: evidence does not verify: {exc}", file=sys.stderr)
        return EXIT_ERROR
    run = verified.predicate.get("run", {})
    pack = verified.predicate.get("pack", {})
    log = verified.predicate.get("log", {})
    finished = "" if run.get("finished") else " (the run had not ended when this was signed)"
    print(
        f"OK: run {run.get('runId')} of {pack.get('name')}@{pack.get('version')} "
        f"{run.get('status')}{finished}; signed by {verified.key_id[:16]}; "
        f"log of {log.get('entries')} entries chains to {log.get('chainHead')}; "
        + (
            f"{verified.artifacts_checked} artifact(s) match"
            if args.artifacts is not None
            else "artifacts not checked (no --artifacts)"
        )
    )
    return EXIT_OK
