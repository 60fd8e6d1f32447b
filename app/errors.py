"""Typed domain errors. Services raise them; the HTML and JSON front ends map them once each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Validation:
    field: str
    detail: str


class DomainError(Exception):
    """Base of every error a service may raise on purpose; carries its HTTP status."""

    status = 400
    default_message = "Invalid request."

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        validations: list[Validation] | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.detail = detail
        self.validations = list(validations or [])
        # The form field this error belongs to, for the HTML pages.
        self.field = field or (self.validations[0].field if len(self.validations) == 1 else None)
        super().__init__(self.message)

    def to_dict(self) -> dict:
        body: dict = {"message": self.message}
        if self.detail:
            body["detail"] = self.detail
        if self.validations:
            body["validations"] = [{"field": v.field, "detail": v.detail} for v in self.validations]
        return body


class InvalidInput(DomainError):
    status = 400


class WrongPassword(InvalidInput):
    """The password offered to prove who the caller is did not match. Front ends count it
    against a rate limit (see `app/ratelimits.py`)."""


class Unauthorized(DomainError):
    status = 401
    default_message = "Unauthorized."


class Forbidden(DomainError):
    status = 403
    default_message = "Forbidden."


class NotFound(DomainError):
    status = 404
    default_message = "Not found."


class Conflict(DomainError):
    status = 409
    default_message = "Conflict."


class Unavailable(DomainError):
    status = 503
    default_message = "Service temporarily unavailable."


def unwrap(value: T | DomainError) -> T:
    """A value a front end parsed, or the error its parsing raised: raise that error here.

    Lets a service refuse a malformed request body at the step of its rules where the SPEC puts
    that refusal (after the checks that come first), without ever parsing the request itself.
    """
    if isinstance(value, DomainError):
        raise value
    return value
