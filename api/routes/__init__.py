"""Thin routers, one per contract tag: parse, authorise, call the gateway, map to the contract."""

PREFIX = "/v1/task-runner"
