"""The one generic PackRun workflow that interprets any compiled plan, and its worker."""
