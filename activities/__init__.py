"""Activities: the executor registry, builtin executors, artifact capture and policy evaluation.

Deliberately empty of imports: the workflow imports `activities.models` inside Temporal's
sandbox, and that must not drag in subprocess, HTTP and file-system code. Import what you need
from its module: `activities.step_activities` (the Temporal activities, `activities_for_worker`),
`activities.registry`, `activities.executor` (the executor contract), `activities.artifacts`,
`activities.secrets`, `activities.builtins`.
"""
