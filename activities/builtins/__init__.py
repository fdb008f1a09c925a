"""The builtin executors, registered as `builtin:NAME`."""

from __future__ import annotations

# Modules, not functions, are imported here so `activities.builtins.shell` stays the module
# (the function of the same name would shadow it).
from activities.builtins import basic, http, shell
from activities.executor import Executor, Params

BUILTINS: dict[str, Executor] = {
    "noop": basic.noop,
    "echo": basic.echo,
    "sleep": basic.sleep,
    "fail": basic.fail,
    "shell": shell.shell,
    "http": http.http,
}

# The model of each builtin's `with`, whose JSON Schema the compiler checks packs against
# (None: any `with` is taken, as `noop` ignores it and `echo` outputs it).
PARAMS: dict[str, type[Params] | None] = {
    "noop": None,
    "echo": None,
    "sleep": basic.SleepParams,
    "fail": basic.FailParams,
    "shell": shell.ShellParams,
    "http": http.HttpParams,
}
