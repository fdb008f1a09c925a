"""TaskRunner's stable surface for the code others write against it.

`taskrunner.executors` is all an executor package needs (README, "Writing an executor"); the
service's own packages (`activities`, `workflows`, ...) are not a surface and may change.
"""
