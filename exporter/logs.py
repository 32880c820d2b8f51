"""Process logging in logfmt (default, like the Prometheus ecosystem) or JSON, one line per record.

Both formats pass the message and every string field through :func:`mask_secrets`: a URL password
(``https://user:pass@host/``) never reaches the log, whichever code path logged the URL.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

LEVELS = ("debug", "info", "warn", "error")
SECRET = "<secret>"
# scheme://user:password@ -- the password may contain ':' and '@'; it ends at the last '@' of the authority
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:\s]*):[^/?#\s]*@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL's userinfo replaced by ``<secret>``."""
    if "@" not in text:
        return text
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{SECRET}@", text)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: mask_secrets(v) if isinstance(v, str) else v for k, v in getattr(record, "fields", {}).items()}


def _logfmt_value(v: object) -> str:
    s = str(v)
    if s == "" or any(c in s for c in ' ="\n\t'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


def timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 UTC with milliseconds: one spelling in both formats, so lines compare across them."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = timestamp(record)
        level = "warn" if record.levelno == logging.WARNING else record.levelname.lower()
        message = mask_secrets(record.getMessage())
        parts = [f"ts={ts}", f"level={level}", f"logger={record.name}", f"msg={_logfmt_value(message)}"]
        for k, v in _fields(record).items():
            parts.append(f"{k}={_logfmt_value(v)}")
        if record.exc_info:
            parts.append(f"err={_logfmt_value(mask_secrets(self.formatException(record.exc_info)))}")
        return " ".join(parts)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "warn" if record.levelno == logging.WARNING else record.levelname.lower()
        doc = {"ts": timestamp(record), "level": level, "logger": record.name,
               "msg": mask_secrets(record.getMessage())}
        doc.update(_fields(record))
        if record.exc_info:
            doc["err"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


def setup(level: str = "info", fmt: str = "logfmt", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
                   "error": logging.ERROR}[level])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
