"""Helpers shared by the HTML blueprints (auth, admin, settings, web): the acting party, the
admin guard, safe redirects, 404 for a missing record, the confirm-on-GET / act-on-POST check,
domain errors as field errors, POST-only buttons, select choices and page numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from flask import abort, flash, request
from flask_login import current_user, login_required
from flask_wtf import FlaskForm

from app.actors import request_actor
from app.errors import DomainError, InvalidInput, NotFound
from app.services.base import Actor

if TYPE_CHECKING:
    from app.services.key_testing import KeyTestResult

T = TypeVar("T")


def current_actor() -> Actor:
    """The signed-in user (or nobody) as the Actor that services record in the audit log."""
    return request_actor(current_user._get_current_object() if current_user.is_authenticated else None)


class EmptyForm(FlaskForm):
    """A form with only its CSRF token: for POST-only buttons (logout, delete, revoke)."""


def choices(pairs):
    """WTForms select options from (value, label) pairs."""
    from wtforms import SelectChoice

    return [SelectChoice(value, label) for value, label in pairs]


@dataclass
class PageArgs:
    """Page numbers for a server-rendered list: `?page=N`, `per_page` rows a page."""

    number: int
    per_page: int
    total: int = 0

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.per_page

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def page_args(per_page: int = 50) -> PageArgs:
    try:
        number = max(1, min(int(request.args.get("page", 1)), 100000))
    except ValueError:
        number = 1
    return PageArgs(number=number, per_page=per_page)


def admin_required(view):
    """Signed-in administrators only. :raise 403: a member. Anonymous users go to the login page."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def or_404(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)`, the record a page is about. :raise 404: malformed id (InvalidInput)
    or no such record (NotFound)."""
    try:
        return fn(*args, **kwargs)
    except (InvalidInput, NotFound):
        abort(404)


def confirmed_post(form: FlaskForm) -> bool:
    """For views where GET shows a confirmation page and POST acts: whether to act now.
    :raise 400: a POST without a valid form (CSRF token)."""
    if request.method != "POST":
        return False
    if not form.validate_on_submit():
        abort(400)
    return True


def safe_next(target: str | None) -> str:
    """Only ever a path of this app: no scheme, no host, no `//` or backslash tricks."""
    if not target:
        return "/"
    target = target.strip()
    # Browsers drop tabs and newlines from URLs and read a backslash as a slash, so `/\t/evil`
    # and `/\evil` both mean `//evil`: refuse any control character or backslash outright.
    if any(ord(c) < 32 or ord(c) == 127 for c in target) or "\\" in target:
        return "/"
    if not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def apply_error(form: FlaskForm, error: DomainError, default_field: str | None = None) -> None:
    """Show a service error next to the field it concerns; otherwise as a flashed message."""
    placed = False
    for v in error.validations:
        field = getattr(form, v.field, None)
        if field is not None and hasattr(field, "errors"):
            _add(field, v.detail)
            placed = True
    field_name = error.field or default_field
    if not placed and field_name and getattr(form, field_name, None) is not None:
        message = error.message if not error.detail else f"{error.message} {error.detail}"
        _add(getattr(form, field_name), message)
        placed = True
    if not placed:
        flash(error.message if not error.detail else f"{error.message} {error.detail}", "error")


def _add(field, message: str) -> None:
    if isinstance(field.errors, tuple):
        field.errors = list(field.errors)
    field.errors.append(message)


FLASH_CATEGORIES = {"ok": "success", "rate_limited": "warning"}


def flash_key_test(outcome: KeyTestResult, subject: str) -> None:
    """Flash a test result: success for ok, a warning for rate limiting, an error otherwise."""
    flash(f"{subject}: {outcome.message}", FLASH_CATEGORIES.get(outcome.result, "error"))
