"""Free text fields: the one rule that a value is plain text every database stores.

Valid UTF-8 (JSON escapes can carry lone surrogates, which neither database stores) without
control characters (PostgreSQL refuses NUL in text outright: it used to fail the INSERT with a
500; tabs and line breaks have no place in a one-line name, model id or key either).

Errors name the field: as `field` and `detail` by default (what the provider services answer),
or as a validation with `as_validation=True` (what the model-config services answer).
"""

from __future__ import annotations

import unicodedata
from typing import Any

from app.errors import InvalidInput, Validation

NOT_UTF8 = "must be valid UTF-8 text"
HAS_CONTROL = "cannot contain control characters"


def text_problem(value: str, *, allow_control: bool = False) -> str | None:
    """Why `value` is not plain text (NOT_UTF8 or HAS_CONTROL), or None when it is.

    `allow_control` checks the encoding only, for callers that refuse control characters with a
    message of their own (base URLs).
    """
    try:
        value.encode()
    except UnicodeEncodeError:
        return NOT_UTF8
    if not allow_control and any(unicodedata.category(c) == "Cc" for c in value):
        return HAS_CONTROL
    return None


def check_text(value: str, field: str, message: str, *, noun: str, allow_control: bool = False,
               as_validation: bool = False) -> str:
    """`value` unchanged when it is plain text.

    :raise InvalidInput: `message`, with the detail "<noun> must be valid UTF-8 text." or
        "<noun> cannot contain control characters."
    """
    problem = text_problem(value, allow_control=allow_control)
    if problem is not None:
        raise _error(message, field, f"{noun} {problem}.", as_validation)
    return value


def clean_text(raw: Any, field: str, message: str, max_len: int, *, noun: str, as_validation: bool = False) -> str:
    """An optional one-line text field: None means "" (none); otherwise a string, trimmed, of at
    most `max_len` characters, plain text (`check_text`).

    :raise InvalidInput: `message`, with a detail naming the rule that was broken.
    """
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise _error(message, field, f"{noun} must be text.", as_validation)
    value = raw.strip()
    if len(value) > max_len:
        raise _error(message, field, f"{noun} are at most {max_len} characters.", as_validation)
    return check_text(value, field, message, noun=noun, as_validation=as_validation)


def _error(message: str, field: str, detail: str, as_validation: bool) -> InvalidInput:
    if as_validation:
        return InvalidInput(message, validations=[Validation(field, detail)])
    return InvalidInput(message, detail=detail, field=field)


def normalize_email(email: str | None) -> str:
    """How an email address is compared and stored: trimmed, lower case."""
    return (email or "").strip().lower()
