"""The builtin executors, registered as `builtin:NAME`."""

from __future__ import annotations

# Modules, not functions, are imported here so `activities.builtins.shell` stays the module
# (the function of the same name would shadow it).
from activities.builtins import basic, http, shell
from activities.executor import Executor

BUILTINS: dict[str, Executor] = {
    "noop": basic.noop,
    "echo": basic.echo,
    "sleep": basic.sleep,
    "fail": basic.fail,
    "shell": shell.shell,
    "http": http.http,
}
