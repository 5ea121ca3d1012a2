"""Structured logs: one JSON object per line, with secrets scrubbed on the way out.

Code logs an event name as the message and its facts as ``extra={...}``; the formatter
writes them as fields. The scrubber is the last line of defence, not the first: nothing
is meant to log a key or a token, but if a message or field ever carries one, it leaves
here as ``[redacted]``.
"""

import json
import logging
import logging.config
import re
from datetime import UTC, datetime
from typing import Any

# Ephemera client keys, Gemini API keys, minted tokens, bearer headers, Fernet keys.
SECRET_PATTERNS = re.compile(
    r"eph_[A-Za-z0-9]{6,}_[A-Za-z0-9_-]{8,}"
    r"|AIza[0-9A-Za-z_-]{20,}"
    r"|auth_tokens/[A-Za-z0-9._-]+"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]+=*"
    r"|\b[A-Za-z0-9_-]{43}="
)
REDACTED = "[redacted]"

# Attributes every LogRecord has; anything else on a record came from ``extra``, bar uvicorn's
# copy of its message with terminal colours.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def scrub(value: Any) -> Any:
    if isinstance(value, str):
        return SECRET_PATTERNS.sub(REDACTED, value)
    if isinstance(value, dict):
        return {key: scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_extra(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(scrub(entry), default=_scrubbed_text, separators=(",", ":"))


def _scrubbed_text(value: Any) -> str:
    """Any other field (Django's ``request``, whose text is its path and query) as text."""
    return scrub(str(value))


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


class ScrubbingFormatter(logging.Formatter):
    """The plain development format plus the extra fields as ``key=value``, scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in _extra(record).items())
        return scrub(f"{super().format(record)} {fields}".rstrip())


def configure_logging(logging_settings: dict) -> None:
    """Django's ``LOGGING_CONFIG``: ``LOGGING`` applied, and kept by a Celery worker or beat.

    Without a ``setup_logging`` receiver, Celery replaces the root logger's handlers and gives
    its task loggers handlers of their own, with formatters that scrub nothing.
    """
    from celery.signals import setup_logging

    logging.config.dictConfig(logging_settings)
    setup_logging.connect(_keep_logging_for_celery, weak=False, dispatch_uid="ephemera-logging")


def _keep_logging_for_celery(loglevel=None, **kwargs) -> None:
    """The worker's ``--loglevel`` still sets the root level, as Celery itself would."""
    if loglevel:
        logging.getLogger().setLevel(loglevel)
