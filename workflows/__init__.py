"""The one generic PackRun workflow that interprets any compiled plan, and its worker.

`workflows.contract` is what the other rooms may import of this package; the rest (the
workflow, the RunBook, the interpreter, the worker) is private to it.
"""
