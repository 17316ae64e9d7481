"""Process-wide logging: one line per record on stderr, JSON for collectors or text for people.

Secrets never reach the log: every ``extra=`` field passes through a :class:`Redactor` before
it is written, so a call site that hands over a header map or a config section cannot leak a
token by accident. The work happens in the formatter, which ``logging`` only calls for records
that pass the level check: a suppressed ``log.debug(...)`` costs a level comparison and nothing
else.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mcpgate.observability.tracing import RequestIdFilter

__all__ = [
    "DEFAULT_REDACT",
    "LEVELS",
    "JsonFormatter",
    "Redactor",
    "TextFormatter",
    "configure_logging",
    "redact_mapping",
]

LEVELS: Final = ("debug", "info", "warning", "error", "critical")
DEFAULT_REDACT: Final = ("authorization", "x-api-key", "cookie", "token", "password", "secret")
MASK: Final = "***"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


_URL_SECRET: Final = re.compile("key|auth|sig|token|pass|secret|credential")


class Redactor:
    """Decides which keys hold secrets, with one regex compiled up front.

    Matching is by substring of the lowercased key, so ``token`` covers ``access_token`` and
    ``X-Upstream-Token`` alike: a false positive costs a masked value in a log line, a false
    negative costs a leaked credential.
    """

    __slots__ = ("_regex", "terms")

    def __init__(self, terms: Sequence[str] = DEFAULT_REDACT) -> None:
        self.terms: tuple[str, ...] = tuple(dict.fromkeys(t.lower() for t in terms if t))
        self._regex = re.compile("|".join(re.escape(t) for t in self.terms)) if self.terms else None

    def is_secret(self, key: str) -> bool:
        return self._regex is not None and self._regex.search(key.lower()) is not None

    def mapping(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        """A copy with secret values masked, at any depth (nested maps and lists of maps)."""
        return {key: MASK if self.is_secret(str(key)) else self.value(value) for key, value in mapping.items()}

    def value(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return self.mapping(value)
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def url(self, url: str) -> str:
        """The URL with a userinfo password and secret-looking query values masked.

        Operators paste tokens into upstream URLs (``?api_key=…``, ``https://user:pw@host``);
        a listing or a log line must still be safe to share.
        """
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, has_password, _ = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{hostport}" if has_password else f"{MASK}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(self._secret_param(k) for k, _ in pairs):
                query = urlencode([(k, MASK if self._secret_param(k) else v) for k, v in pairs], safe="*")
        if netloc == parts.netloc and query == parts.query:
            return url
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def _secret_param(self, key: str) -> bool:
        # Query strings carry API keys under many names (key, api_key, sig, auth): mask more there.
        return self.is_secret(key) or _URL_SECRET.search(key.lower()) is not None

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A command line with secret-looking option values masked.

        Covers ``--api-token=abc`` and ``--api-token abc``; a secret passed positionally cannot
        be told from a path and stays visible (use ``env:`` for secrets).
        """
        out: list[str] = []
        mask_next = False
        for arg in argv:
            if mask_next:
                out.append(MASK)
                mask_next = False
                continue
            name, eq, _ = arg.partition("=")
            if arg.startswith("-") and self.is_secret(name):
                if eq:
                    out.append(f"{name}={MASK}")
                    continue
                mask_next = True
            out.append(arg)
        return out


@functools.lru_cache(maxsize=32)
def _redactor(terms: tuple[str, ...]) -> Redactor:
    return Redactor(terms)


def redact_mapping(mapping: Mapping[str, Any], redact: Sequence[str]) -> dict[str, Any]:
    """Mask secret values in ``mapping``; the redactor for a term list is built once and cached."""
    return _redactor(tuple(redact)).mapping(mapping)


def _timestamp(record: logging.LogRecord, *, millis: bool) -> str:
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{base}.{int(record.msecs):03d}Z" if millis else f"{base}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the extras, ``exc``."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _timestamp(record, millis=True),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in self.redactor.mapping(_extras(record)).items():
            payload.setdefault(key, value)  # an extra never overwrites the fixed fields
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)


_BARE: Final = re.compile(r"[^\s=\"']+")


def _text_value(value: Any) -> str:
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-01T00:00:00Z INFO  mcpgate.server: message key=value``, traceback below."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record, millis=False)} {record.levelname:<5} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            fields = " ".join(f"{k}={_text_value(v)}" for k, v in self.redactor.mapping(extras).items())
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        elif record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at emit time, not at configuration time.

    Test runners and daemonizers swap ``sys.stderr``; a handler holding the old stream would
    write to a closed file.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure_logging(level: str, fmt: Literal["json", "text"], redact: Sequence[str] = DEFAULT_REDACT) -> None:
    """Route every logger to one stderr handler; calling it again replaces that handler.

    Handlers someone else installed on the root logger (pytest's capture, an embedding
    application) are left in place: only the one this function added is swapped.
    """
    name = level.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    redactor = _redactor(tuple(redact))
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name.upper())
    # One line per request would halve throughput and duplicate the audit log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
