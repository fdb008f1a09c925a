"""Activities: the executor registry, builtin executors, artifact capture and policy evaluation."""
