"""structlog set-up: JSON lines in production, readable console lines in development.

Log lines go to stderr, so that a command's stdout carries only its result.
"""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def configure_logging(log_format: str = "console", level: str = "INFO", file=None) -> None:
    """Configure structlog and the standard library's root logger; ``file`` replaces stderr."""
    numeric = LEVELS[level.upper()]
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=file or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(stream=file or sys.stderr, level=max(numeric, logging.WARNING), force=True)
