"""The FastAPI facade serving the REST contract over the PackRun workflow."""
