"""One error mapping for the whole app: JSON under /api/, HTML pages elsewhere."""

from __future__ import annotations

from flask import Flask, Response, current_app, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from psycopg.errors import DeadlockDetected, SerializationFailure
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from app.errors import DomainError
from app.extensions import db, login_manager
from app.metrics import count_database_unavailable

RETRY_AFTER_SECONDS = "5"

_HTTP_MESSAGES = {
    400: "Bad request.",
    401: "Unauthorized.",
    403: "Forbidden.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
    415: "Unsupported media type.",
    429: "Too many requests.",
    500: "Internal error.",
    503: "Service temporarily unavailable.",
}

_PAGE_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Page not found",
    405: "Method not allowed",
    413: "Too large",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}


def wants_json() -> bool:
    return request.path.startswith("/api/")


def is_database_unavailable(error: BaseException) -> bool:
    """Errors a client may retry: the database is unreachable or busy (503 with Retry-After).

    Deadlocks and serialization failures are among them (PostgreSQL reports both as operational
    errors), but they are bugs in how a use case takes its locks, not outages: see
    `is_lock_conflict`.
    """
    if isinstance(error, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def is_lock_conflict(error: BaseException) -> bool:
    """A deadlock or a serialization failure reported by PostgreSQL (SQLSTATE 40P01 / 40001)."""
    orig = getattr(error, "orig", None)
    return isinstance(error, DBAPIError) and isinstance(orig, DeadlockDetected | SerializationFailure)


def error_response(status: int, body: dict | None = None, page_message: str | None = None) -> Response:
    body = body or {"message": _HTTP_MESSAGES.get(status, "Error.")}
    if wants_json():
        response = jsonify(body)
    else:
        response = current_app.response_class(_error_page(status, page_message or body.get("message")))
    response.status_code = status
    return response


def _error_page(status: int, message: str | None) -> str:
    """The error page in the layout; a bare page if the layout itself cannot be rendered."""
    request_id = getattr(g, "request_id", None)
    if status == 503:
        # The database is gone: the layout must not (re)load the signed-in user from it.
        g._login_user = login_manager.anonymous_user()
    try:
        return render_template("errors/error.html", status=status, title=_PAGE_TITLES.get(status, "Error"),
                               message=message, request_id=request_id)
    except Exception:
        current_app.logger.exception("error page failed to render [request_id=%s]", request_id)
        return (f"<!doctype html><title>Error {status}</title><h1>{escape(_PAGE_TITLES.get(status, 'Error'))}</h1>"
                f"<p>{escape(message or '')}</p><p>Reference: {escape(request_id or '-')}</p>")


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # the connection may be gone; the pool will replace it
        current_app.logger.warning("rollback after error failed", exc_info=True)


def init_errors(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(error: DomainError):
        _rollback()
        response = error_response(error.status, error.to_dict())
        if error.status == 503:
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        return error_response(400, {"message": "CSRF token missing or invalid."},
                              "The form expired or was not sent from this site. Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        status = error.code or 500
        response = error_response(status)
        if status == 429:
            response.headers["Retry-After"] = "60"
        valid_methods = getattr(error, "valid_methods", None)
        if status == 405 and valid_methods:
            response.headers["Allow"] = ", ".join(valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        _rollback()
        if is_database_unavailable(error):
            if is_lock_conflict(error):
                # Retryable for the client, but a defect here: logged as an error. Only the error's
                # class and SQLSTATE, never its text (which carries the statement's parameters).
                current_app.logger.error("database lock conflict in %s %s: %s (SQLSTATE %s) [request_id=%s]",
                                         request.method, request.path, type(error.orig).__name__,
                                         getattr(error.orig, "sqlstate", None), getattr(g, "request_id", None))
            else:
                count_database_unavailable()  # not lock conflicts above: those are defects, not outages
                current_app.logger.warning("database unavailable: %s [request_id=%s]", type(error).__name__,
                                           getattr(g, "request_id", None))
            response = error_response(503, {"message": _HTTP_MESSAGES[503]})
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
            return response
        request_id = getattr(g, "request_id", None)
        # The request id is in the message itself, so every handler (not only ours) shows it.
        current_app.logger.exception("unhandled error in %s %s [request_id=%s]", request.method, request.path, request_id)
        return error_response(500, {"message": "Internal error.", "request_id": request_id})
