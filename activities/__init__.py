"""Activities: the executor registry, builtin executors, artifact capture and policy evaluation.

What the workflow sends them and gets back is the contract's (`workflows.contract.activities`);
this package is deliberately empty of imports. Import what you need from its module:
`activities.step_activities` (the Temporal activities), `activities.registry`,
`activities.executor` (the executor contract), `activities.artifacts`, `activities.secrets`,
`activities.builtins`.
"""
