"""Logging: request ids on every line, and redaction as a last line of defence.

The code never logs a secret on purpose. In case some code does by mistake, every log record is
redacted when it is created (a log-record factory, so records of any logger are covered, whichever
handlers are attached later), and again by a filter on the handlers (for `extra=` fields, which
are set after creation). The message is rendered with its arguments first, so a key passed as an
argument or inside a dict is masked too; tracebacks and stack traces are rendered and masked, and
the live exception is dropped from the record so no handler can format it again unmasked.

What is masked: provider keys with a known prefix (OpenAI, Anthropic, OpenRouter, Google, AWS,
Groq, Hugging Face...), our `sb_` tokens, `Bearer` credentials, AWS secret keys, values after
key-ish words (`api_key=`, `"password": ...`, `Authorization:`), and long opaque strings mixing
upper case, lower case and digits. UUIDs and hex strings (ids, request ids, digests) stay readable,
so a provider key made only of hex digits is masked only after a key-ish word.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from flask import Flask, g, has_request_context

MASK = "[REDACTED]"

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _looks_random(text: str) -> bool:
    return any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)


def _mask_value(match: re.Match) -> str:
    """Keep the key-ish prefix (group 1), mask the value unless it is a UUID (an id, not a secret)."""
    value = match.group(2)
    if _UUID_RE.match(value) or value.lower() in ("bearer", "basic"):
        return match.group(0)
    return match.group(1) + MASK


# (pattern, replacement) pairs, applied in order. A replacement string may keep group 1.
_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match], str]]] = [
    # Bearer credentials in headers or messages.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
    # Keys and tokens with a known prefix: OpenAI/Anthropic/OpenRouter (sk-), ours (sb_), Groq,
    # Hugging Face, xAI, Perplexity, Replicate, GitHub, GitLab, Slack, Vercel, Fireworks, NVIDIA.
    (re.compile(r"\b(?:sk|sb|gsk|hf|xai|pplx|r8|ghp|gho|ghu|ghs|github_pat|glpat|xox[abprs]|vck|fw|nvapi)"
                r"[-_][A-Za-z0-9_-]{12,}"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), MASK),                  # Google API keys
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"), MASK),  # AWS access key ids
    # Values after key-ish words: api_key=..., "password": "...", Authorization: ..., api-key: ...
    (re.compile(r"(?i)(\b(?:[a-z]+[_-])?(?:api[_-]?key|secret(?:[_-]?key)?|password|passwd|token|authorization|"
                r"credentials?|session|cookie|private[_-]?key)[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}\[\]]{6,})"), _mask_value),
    # AWS secret access keys: 40 base64 characters.
    (re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
     lambda m: MASK if _looks_random(m.group(0)) else m.group(0)),
    # Any other long opaque string that looks random (upper, lower and digits).
    (re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{24,}"),
     lambda m: MASK if _looks_random(m.group(0)) and not _UUID_RE.match(m.group(0)) else m.group(0)),
]


def redact(text: str) -> str:
    """Mask everything in `text` that is shaped like a key, token or credential."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


_FORMATTER = logging.Formatter()
_PLAIN_TYPES = (int, float, bool, type(None))
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact_record(record: logging.LogRecord) -> None:
    """Render and mask the message, traceback, stack and extra fields of `record` in place."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string must not break logging, nor skip redaction
        message = f"{_safe_str(record.msg)} {_safe_str(record.args)}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        record.exc_info = None  # the exception object itself may hold the secret
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    for name, value in list(vars(record).items()):
        if name in _STANDARD_ATTRS or isinstance(value, _PLAIN_TYPES):
            continue
        setattr(record, name, redact(value if isinstance(value, str) else _safe_str(value)))


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


class RedactingFilter(logging.Filter):
    """Mask secrets in every record passing through (message, arguments, traceback, extras)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(g, "request_id", "-") if has_request_context() else "-"
        return True


class UnlessWrittenAbove(logging.Filter):
    """On the app logger's own handler: let a record through only when no handler above the
    logger (the root's, reached by propagation) writes it, so each line is written once.

    Asked at every record, as handlers come and go (pytest adds its own to the root for a test):
    under gunicorn or `flask run` the root has none and the app's handler writes the line with
    its request id; where the root is configured (logging.basicConfig, a dictConfig with a root
    handler, pytest's caplog), the root's handlers write it.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        above = self.logger.parent if self.logger.propagate else None
        while above is not None:
            if any(record.levelno >= handler.level for handler in above.handlers):
                return False
            above = above.parent if above.propagate else None
        return True


def install_redacting_record_factory() -> None:
    """Redact every log record of the process when it is created (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure_logging(app: Flask) -> None:
    install_redacting_record_factory()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    handler.addFilter(UnlessWrittenAbove(app.logger))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    app.logger.handlers[:] = [handler]
    app.logger.setLevel(logging.INFO)
    app.logger.propagate = True  # root handlers (and pytest's caplog) see the app's records too
    # Handlers already on the root logger (gunicorn's, Werkzeug's) also mask `extra=` fields.
    for root_handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in root_handler.filters):
            root_handler.addFilter(RedactingFilter())
