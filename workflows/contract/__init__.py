"""The published contract between the rooms: what crosses the wall of `workflows/`.

`activities/` and `api/` reach `workflows/` only through this package (tests/test_imports.py
holds the rule); only the worker entry point, `workflows.worker`, wires workflows to activities.

- `activities`: activity names, and the requests and results the workflow exchanges with them.
- `state`: the workflow's input, its signals and update, and what its queries return.
- `initial`: a run's state before anything ran, built from its plan (workflow and API alike).
- `names`: workflow types, signal, update and query names, search attributes, workflow ids.
- `refusals`: why a run refuses an approval decision.
- `signing`: the signed approval-link token and webhook signatures (pure code, no clock).
- `artifacts`: where a run's files live, for the worker that writes and the API that serves them.
- `service_key`: the service's Ed25519 key (evidence bundles; any payload the service signs).
- `times`: the one RFC 3339 formatter every timestamp of the contract goes through.
- `settings`: what the API and the worker must agree on (Temporal connection, data dir, key).
- `ceilings`: the operator's sandbox ceilings as settings (the API, the worker and the CLI).
- `log_chain`: the hash chain over a run's log entries (the workflow writes it, verifiers redo it).

Shapes here travel in running histories: fields are only ever added, with defaults.
"""
