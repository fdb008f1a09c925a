"""The `taskrunner` command line: one parser, subcommands registered by the modules that own them.

To add commands, write a module with `register(subcommands)` that adds its parsers, each with
`set_defaults(handler=...)`, and list the module in `COMMAND_MODULES`. A handler takes the parsed
arguments and returns an exit code, or raises `CliError`. Import heavy dependencies (temporalio,
uvicorn) inside handlers, not at module level, so `taskrunner validate` stays quick.

Exit codes: 0 success, 2 an invalid manifest or inputs (one line per error on stderr:
`FILE:LINE:COLUMN: path: message` for a pack file's errors, `path: message` otherwise), 1
anything else, reported in one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

from compiler import ManifestError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2

COMMAND_MODULES: list[str] = [
    "cli.pack_commands",
    "cli.service_commands",
    "cli.client_commands",
    "cli.db_commands",
    "cli.evidence_commands",
    "cli.registry_commands",
    "cli.schema_commands",
    "cli.completion_commands",
]

Handler = Callable[[argparse.Namespace], int]


class Subcommands(Protocol):
    """What `register` receives: argparse's subparsers action."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


class CliError(Exception):
    """A failure to report in one line with exit code 1 (a bad path, unreadable inputs, ...)."""


class _Parser(argparse.ArgumentParser):
    # A usage error is exit code 1: 2 is kept for invalid manifests.
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taskrunner",
        description="A durable runner for declarative task packs, built on Temporal.",
    )
    subcommands = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command", required=True
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ManifestError as exc:
        for error in exc.errors:
            print(error.located_str(exc.source), file=sys.stderr)
        return EXIT_INVALID
    except CliError as exc:
        print(f"taskrunner: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`taskrunner plan x | head`): not an error worth a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("TASKRUNNER_DEBUG"):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"taskrunner: error: {type(exc).__name__}: {detail} (set TASKRUNNER_DEBUG=1 for a "
            "traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    # Through the importable module, not this `__main__` copy, so that command modules and this
    # entry point share one CliError class.
    from cli.main import run as _run

    _run()
