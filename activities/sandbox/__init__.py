"""The sandbox every command of a step runs in: bubblewrap namespaces, cgroup limits, the egress
proxy. `runner.CommandRunner` runs commands; `host.probe` says what this host gives."""
