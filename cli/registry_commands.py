"""Registry commands: `taskrunner packs publish|list|show|disable|enable` and `taskrunner
schedules create|list|show|pause|unpause|trigger|delete`, through the API.

`packs publish FILE` publishes the manifest as `metadata.name@metadata.version`; with `--sign
KEY` (an Ed25519 private key PEM, such as `taskrunner keys generate` writes) it sends a DSSE
envelope over the manifest's exact bytes, which the service checks against the keys its
operator trusts. `runs create NAME[@VERSION]` starts a run of a published pack.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.client_commands import api_options, api_session, located_in
from cli.completion_commands import PACKS, completes
from cli.main import EXIT_OK, CliError, Subcommands
from cli.output import add_output_option, dump, duration, table
from workflows.contract.times import now_rfc3339


def register(subcommands: Subcommands) -> None:
    common = api_options()

    packs = subcommands.add_parser(
        "packs",
        help="publish and browse the pack registry",
        description="The tenant's registry of published pack versions.",
    )
    actions = packs.add_subparsers(title="commands", metavar="COMMAND", dest="packs", required=True)

    publish = actions.add_parser(
        "publish", parents=[common], help="publish a manifest file as name@version"
    )
    publish.add_argument("file", type=Path, help="the manifest (YAML)")
    publish.add_argument("--sign", type=Path, metavar="KEY", help="sign with this Ed25519 PEM key")
    publish.set_defaults(handler=publish_command)

    listing = actions.add_parser("list", parents=[common], help="list published versions")
    listing.add_argument("--name", help="only this pack")
    add_output_option(listing)
    listing.set_defaults(handler=list_command)

    show = actions.add_parser(
        "show", parents=[common], help="a version's record and manifest (default: highest active)"
    )
    completes(show.add_argument("ref", metavar="NAME[@VERSION]"), PACKS)
    add_output_option(show, wide=False)
    show.set_defaults(handler=show_command)

    for action in ("disable", "enable"):
        command = actions.add_parser(
            action, parents=[common], help=f"{action} a version (disabled: starts no new run)"
        )
        completes(command.add_argument("ref", metavar="NAME@VERSION"), PACKS)
        command.set_defaults(handler=status_command, action=action)

    schedules = subcommands.add_parser(
        "schedules",
        help="schedule runs of registered packs (Temporal Schedules)",
        description="Schedules that start runs of a registered pack on a cron spec.",
    )
    verbs = schedules.add_subparsers(
        title="commands", metavar="COMMAND", dest="schedules", required=True
    )
    create = verbs.add_parser("create", parents=[common], help="create a schedule")
    create.add_argument("schedule_id", metavar="ID")
    create.add_argument("pack", metavar="NAME[@VERSION]", help="a registered pack")
    create.add_argument("--cron", required=True, help="cron: 5 fields, or 7 with seconds and year")
    create.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    create.add_argument("--inputs", help="input values: a JSON object, or a JSON or YAML file")
    create.add_argument(
        "--overlap",
        default="skip",
        choices=["skip", "bufferOne", "bufferAll", "cancelOther", "terminateOther", "allowAll"],
        help="when a run is still going at the next firing (default skip)",
    )
    create.add_argument(
        "--catchup-window", type=int, default=60, help="seconds: missed firings run (default 60)"
    )
    create.set_defaults(handler=schedule_create_command)
    listing = verbs.add_parser("list", parents=[common], help="list schedules")
    add_output_option(listing)
    listing.set_defaults(handler=schedule_list_command)
    show = verbs.add_parser("show", parents=[common], help="a schedule and its next firings")
    show.add_argument("schedule_id", metavar="ID")
    add_output_option(show, wide=False)
    show.set_defaults(handler=schedule_action_command, verb="GET", action="")
    for verb in ("pause", "unpause", "trigger"):
        command = verbs.add_parser(verb, parents=[common], help=f"{verb} a schedule")
        command.add_argument("schedule_id", metavar="ID")
        command.set_defaults(handler=schedule_action_command, verb="POST", action=verb)
    delete = verbs.add_parser("delete", parents=[common], help="delete a schedule")
    delete.add_argument("schedule_id", metavar="ID")
    delete.set_defaults(handler=schedule_action_command, verb="DELETE", action="")


def _split(ref: str, need_version: bool = False) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    if not name or (need_version and not version):
        raise CliError(f"{ref!r}: give NAME@VERSION")
    return name, version or None


def publish_command(args: argparse.Namespace) -> int:
    try:
        manifest = args.file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    body: dict[str, Any] = {"manifest": manifest.decode()}
    if args.sign:
        from api.pack_signing import sign_pack
        from workflows.contract.service_key import ServiceKeyError, parse_private_pem

        try:
            key = parse_private_pem(args.sign.read_bytes(), str(args.sign))
        except OSError as exc:
            raise CliError(f"cannot read {args.sign}: {exc.strerror}") from None
        except ServiceKeyError as exc:
            raise CliError(str(exc)) from None
        body["signature"] = sign_pack(manifest, key)
    with api_session(args) as api, located_in(str(args.file)):
        record = api.call("POST", "/packs", json=body)
    signed = f", signed by {record['signedBy'][:16]}" if record.get("signedBy") else ""
    print(f"{record['name']}@{record['version']} {record['digest']}{signed}")
    return EXIT_OK


def list_command(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"pageSize": 200}
    if args.name:
        params["name"] = args.name
    records: list[dict[str, Any]] = []
    with api_session(args) as api:
        while True:
            page = api.call("GET", "/packs", params=params)
            records.extend(page["packs"])
            if not page.get("nextPageToken"):
                break
            params["pageToken"] = page["nextPageToken"]
    if args.output in ("json", "yaml"):
        dump(records, args.output)
        return EXIT_OK
    wide = args.output == "wide"
    headers = ["PACK", "STATUS", "DIGEST", "PUBLISHED", "AGE", "BY"]
    if wide:
        headers.append("SIGNED BY")
    rows = []
    for r in records:
        row = [
            f"{r['name']}@{r['version']}",
            r["status"],
            r["digest"] if wide else r["digest"][:19],
            r["publishedAt"],
            duration(r["publishedAt"], None),
            r.get("publishedBy") or "-",
        ]
        if wide:
            row.append(r.get("signedBy") or "-")
        rows.append(row)
    table(headers, rows)
    return EXIT_OK


def show_command(args: argparse.Namespace) -> int:
    with api_session(args) as api:
        return _show(api, args)


def _show(api: Any, args: argparse.Namespace) -> int:
    name, version = _split(args.ref)
    if version is None:
        versions = api.call("GET", "/packs", params={"name": name, "pageSize": 200})["packs"]
        active = [v for v in versions if v["status"] == "active"]
        if not active:
            raise CliError(f"no active version of pack {name!r}")
        version = active[0]["version"]
    record = api.call("GET", f"/packs/{name}/versions/{version}")
    if args.output in ("json", "yaml"):
        dump(record, args.output)
        return EXIT_OK
    print(f"{record['name']}@{record['version']}  {record['status']}")
    print(f"  digest     {record['digest']}")
    print(f"  published  {record['publishedAt']} by {record.get('publishedBy') or '-'}")
    if record.get("signedBy"):
        print(f"  signed by  {record['signedBy']}")
    print()
    print(record["manifest"], end="" if record["manifest"].endswith("\n") else "\n")
    return EXIT_OK


def status_command(args: argparse.Namespace) -> int:
    name, version = _split(args.ref, need_version=True)
    with api_session(args) as api:
        record = api.call("POST", f"/packs/{name}/versions/{version}/{args.action}")
    print(f"{record['name']}@{record['version']} {record['status']}")
    return EXIT_OK


def schedule_create_command(args: argparse.Namespace) -> int:
    from cli.client_commands import _inputs

    name, version = _split(args.pack)
    ref: dict[str, Any] = {"name": name}
    if version:
        ref["version"] = version
    body: dict[str, Any] = {
        "scheduleId": args.schedule_id,
        "pack": ref,
        "cron": args.cron,
        "timezone": args.timezone,
        "overlapPolicy": args.overlap,
        "catchupWindowSeconds": args.catchup_window,
    }
    if args.inputs:
        body["inputs"] = _inputs(args.inputs)
    with api_session(args) as api:
        _print_schedule(api.call("POST", "/schedules", json=body))
    return EXIT_OK


def schedule_list_command(args: argparse.Namespace) -> int:
    with api_session(args) as api:
        schedules = api.call("GET", "/schedules")["schedules"]
    if args.output in ("json", "yaml"):
        dump(schedules, args.output)
        return EXIT_OK
    wide = args.output == "wide"
    headers = ["SCHEDULE", "PACK", "CRON", "TIMEZONE", "STATE", "NEXT", "IN"]
    now = now_rfc3339()
    if wide:
        headers += ["OVERLAP", "LAST FIRED", "CREATED BY", "NOTE"]
    rows = []
    for s in schedules:
        row = [
            s["scheduleId"],
            f"{s['pack']}@{s['packVersion']}",
            s["cron"],
            s["timezone"],
            "paused" if s["paused"] else "active",
            (s.get("nextRunTimes") or ["-"])[0],
            duration(now, s["nextRunTimes"][0]) if s.get("nextRunTimes") else "-",
        ]
        if wide:
            fired = [a["startedAt"] for a in s.get("recentActions", [])]
            row += [
                s["overlapPolicy"],
                fired[-1] if fired else "-",
                s.get("createdBy") or "-",
                s.get("note") or "",
            ]
        rows.append(row)
    table(headers, rows)
    return EXIT_OK


def schedule_action_command(args: argparse.Namespace) -> int:
    path = f"/schedules/{args.schedule_id}" + (f"/{args.action}" if args.action else "")
    with api_session(args) as api:
        answer = api.call(args.verb, path)
    if getattr(args, "output", None) in ("json", "yaml"):
        dump(answer, args.output)
        return EXIT_OK
    if answer is None:
        print(f"{args.schedule_id} deleted")
    else:
        _print_schedule(answer)
    return EXIT_OK


def _print_schedule(s: dict[str, Any]) -> None:
    state = "paused" if s["paused"] else "active"
    print(f"{s['scheduleId']}  {s['pack']}@{s['packVersion']}  {state}")
    print(f"  cron       {s['cron']} ({s['timezone']}), overlap {s['overlapPolicy']}")
    if s.get("note"):
        print(f"  note       {s['note']}")
    for moment in s.get("nextRunTimes", [])[:3]:
        print(f"  next       {moment}")
    for action in s.get("recentActions", [])[-3:]:
        print(f"  fired      {action['startedAt']}")
