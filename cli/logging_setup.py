"""One logging pipeline for every long-running command: structlog renders everything.

structlog's own events and the standard library's records (uvicorn, temporalio, and the
`workflow.logger` / `activity.logger` records of runs) go through the same processors and one
handler on stderr, as console lines for people or JSON lines for collectors.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
import temporalio.activity
import temporalio.workflow

FORMATS = ("console", "json")


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Route structlog and the standard library through one structlog formatter on stderr."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _tidy_extras,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        finish: list[Any] = [structlog.processors.format_exc_info]
    else:
        # Plain tracebacks, whether or not `rich` is installed: rich's show every frame's
        # locals, which puts request bodies and tokens in the log and can take seconds to draw.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        finish = []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *finish,
                renderer,
            ],
        )
    )
    # The context goes on as key-values (see _tidy_extras), not pasted into every message.
    temporalio.activity.logger.activity_info_on_message = False
    temporalio.workflow.logger.workflow_info_on_message = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every plugin it loads and every migration it runs at INFO; the API logs
    # one `database.migrated` event instead. Its lines come back at DEBUG.
    logging.getLogger("alembic").setLevel(
        logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    )
    # uvicorn installs handlers of its own unless told not to; make sure its records come here.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def _tidy_extras(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # uvicorn attaches an ANSI-coloured copy of each message; the renderer colours anyway.
    event.pop("color_message", None)
    # Temporal's loggers attach their whole context; the workflow id (the run) is what matters.
    for key in ("temporal_activity", "temporal_workflow"):
        info = event.pop(key, None)
        if isinstance(info, dict):
            event.setdefault("workflow_id", info.get("workflow_id"))
            if "attempt" in info:
                event.setdefault("attempt", info["attempt"])
    return event
