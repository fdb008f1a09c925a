"""`taskrunner schema`: the manifest's JSON Schema, for editors and linters.

Printed to stdout, or written with `-o FILE`. It is generated from the compiler's models, the
same document the API serves at /schemas/taskpack.json and the repository keeps in
schema/taskpack.schema.json. Each installed executor's parameters describe the `with` of the
steps that use it (as `validate` checks them). A pack's first line can point an editor at it:

    # yaml-language-server: $schema=path/to/taskpack.schema.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.main import EXIT_OK, CliError, Subcommands


def register(subcommands: Subcommands) -> None:
    schema = subcommands.add_parser(
        "schema",
        help="print the manifest's JSON Schema (for editors: yaml-language-server)",
        description="Print the task pack manifest's JSON Schema (draft 2020-12), generated from "
        "the compiler's models. Point an editor at it with a first line "
        "`# yaml-language-server: $schema=FILE` in a pack.",
    )
    schema.add_argument(
        "--output", "-o", metavar="FILE", type=Path, help="write it to FILE (default: stdout)"
    )
    schema.add_argument(
        "--any-executor",
        action="store_true",
        help="leave out the executors installed here: `with` described as any mapping (for "
        "packs meant for a service with other executors)",
    )
    schema.set_defaults(handler=schema_command)


def schema_command(args: argparse.Namespace) -> int:
    from cli.catalog import installed_executors
    from compiler.schema import manifest_schema_text

    text = manifest_schema_text(None if args.any_executor else installed_executors())
    if args.output is None or str(args.output) == "-":
        sys.stdout.write(text)
        return EXIT_OK
    try:
        args.output.write_text(text)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"{args.output}: the task pack schema, {len(text)} bytes", file=sys.stderr)
    return EXIT_OK
