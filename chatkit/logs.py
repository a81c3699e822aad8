"""Log formats for ``chatkit serve``: people's lines, or one JSON object per line.

``--log-format json`` writes each record as one JSON object: ``ts`` (UTC, ISO 8601
with milliseconds), ``level``, ``logger``, ``message`` (the text people would read),
and the record's structured fields when the code logging it gave them (``event``,
``nick``, ``room``, ``address``, ``plugin``, ``reason``, ... as ``extra=``), plus
``exception`` with the traceback when there is one. Field names are stable; the
wording of ``message`` is not.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["FIELDS", "HUMAN_FORMAT", "JsonFormatter"]

HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# The structured fields a record may carry (logging's ``extra``), in output order.
FIELDS = (
    "event",
    "nick",
    "old",
    "room",
    "address",
    "port",
    "listening",
    "reason",
    "plugin",
    "hook",
    "code",
    "id",
    "to",
    "face",
    "count",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)
