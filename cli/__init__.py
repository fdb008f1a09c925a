"""The `taskrunner` command: every command users run."""
