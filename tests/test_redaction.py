"""Log redaction: a key or token logged by mistake never reaches a log line, whichever logger,
handler, argument style or traceback carries it; ordinary text and ids stay readable."""

from __future__ import annotations

import io
import logging
import secrets
import string
import uuid

import pytest

from app.logging import MASK, RedactingFilter, redact
from tests.support import API, make_token, new_key

SLICE = 12


def leaked_slices(text: str, secret: str) -> list[str]:
    """Every 12-character slice of `secret` that appears in `text`."""
    return [secret[i:i + SLICE] for i in range(len(secret) - SLICE + 1) if secret[i:i + SLICE] in text]


def assert_hidden(text: str, *secrets_: str) -> None:
    for secret in secrets_:
        assert secret not in text
        assert leaked_slices(text, secret) == [], secret


def aws_access_key_id() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))


def aws_secret_access_key() -> str:
    alphabet = string.ascii_letters + string.digits + "/+"
    return "Ab1" + "".join(secrets.choice(alphabet) for _ in range(37))


@pytest.fixture
def canaries(app, member):
    """A provider key, one of our API tokens, an AWS key pair and a Google key."""
    return {
        "provider_key": new_key("log"),
        "api_token": make_token(app, member),
        "aws_key_id": aws_access_key_id(),
        "aws_secret": aws_secret_access_key(),
        "google_key": "AIza" + secrets.token_urlsafe(30)[:35],
    }


@pytest.fixture
def captured():
    """A handler added after the app was built, with no filter of its own (like pytest's, or a
    handler some library adds): records must already be masked when they reach it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


LOGGERS = ["app", "x"]


def _logger(app, name: str) -> logging.Logger:
    return app.logger if name == "app" else logging.getLogger(name)


@pytest.mark.parametrize("logger_name", LOGGERS)
def test_secrets_in_messages_and_arguments_are_masked(app, canaries, caplog, captured, logger_name):
    caplog.set_level(logging.INFO)
    log = _logger(app, logger_name)
    key, token = canaries["provider_key"], canaries["api_token"]
    log.warning(f"calling upstream with key {key}")
    log.warning("calling upstream with key %s", key)
    log.warning("headers: %s", {"Authorization": f"Bearer {token}", "Accept": "application/json"})
    log.warning("raw header Authorization: Bearer %s", token)
    log.warning("aws credentials %s / %s", canaries["aws_key_id"], canaries["aws_secret"])
    log.warning("google %s", canaries["google_key"])
    log.warning("provider config %r", {"name": "openai-prod", "api_key": key, "base_url": "https://api.openai.com/v1"})
    log.warning("%(what)s=%(value)s", {"what": "api_key", "value": key})
    log.warning('json body {"api_key": "%s", "label": "ordinary"}', key)
    log.warning("request line %s", f"GET /v1/models?api_key={key} HTTP/1.1")
    log.warning("broken format %s %s", key)  # a mistake in a format string must not bypass redaction

    text = caplog.text + captured.getvalue()
    assert_hidden(text, *canaries.values())
    for record in caplog.records:
        assert_hidden(record.getMessage(), *canaries.values())
    assert MASK in caplog.text
    # What is not secret stays readable.
    assert "openai-prod" in text and "https://api.openai.com/v1" in text
    assert "application/json" in text and "ordinary" in text and "Bearer " in text


@pytest.mark.parametrize("logger_name", LOGGERS)
def test_secrets_in_exceptions_and_tracebacks_are_masked(app, canaries, caplog, captured, logger_name):
    caplog.set_level(logging.INFO)
    log = _logger(app, logger_name)
    key, token = canaries["provider_key"], canaries["api_token"]
    try:
        try:
            raise ValueError(f"upstream rejected key {key}")
        except ValueError as inner:
            raise RuntimeError(f"retry with token {token} failed") from inner
    except RuntimeError:
        log.exception("provider test failed")
        log.error("again, with exc_info", exc_info=True)
    log.warning("where am I (api_key=%s)", key, stack_info=True)

    text = caplog.text + captured.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError" in text and "ValueError" in text and "provider test failed" in text
    assert "test_secrets_in_exceptions_and_tracebacks_are_masked" in text  # the stack is still useful
    assert_hidden(text, key, token)
    for record in caplog.records:
        assert record.exc_info is None  # no handler can format the live exception again
        assert_hidden(record.exc_text or "", key, token)
        assert_hidden(record.stack_info or "", key, token)


def test_an_unhandled_error_in_a_request_is_logged_masked(app, canaries, caplog):
    """The 500 handler logs the traceback; the key in the exception stays out of the log and the response."""
    from app import create_app
    from app.extensions import db
    from tests.conftest import base_config

    key = canaries["provider_key"]
    other = create_app(base_config())

    @other.get("/boom")
    def boom():
        raise RuntimeError(f"upstream said: invalid key {key}")

    caplog.set_level(logging.INFO)
    try:
        response = other.test_client().get("/boom")
        assert response.status_code == 500
        assert_hidden(response.get_data(as_text=True), key)
        assert "unhandled error" in caplog.text and "RuntimeError" in caplog.text
        assert_hidden(caplog.text, key)
    finally:
        with other.app_context():
            db.engine.dispose()


def test_a_bad_bearer_token_is_never_logged(app, canaries, caplog, captured, client):
    caplog.set_level(logging.DEBUG)
    token = canaries["api_token"]
    response = client.get(f"{API}/me", headers={"Authorization": f"Bearer {token}x"})
    assert response.status_code == 401
    logging.getLogger("werkzeug").info('127.0.0.1 - - "%s" %s -', f"GET {API}/me?token={token} HTTP/1.1", 401)
    assert_hidden(caplog.text + captured.getvalue(), token)


def test_extra_fields_are_masked_by_the_app_handlers(app, canaries):
    key = canaries["provider_key"]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "saving key", None, None)
    record.api_key = key
    record.payload = {"api_key": key, "id": 7}
    record.attempt = 3
    RedactingFilter().filter(record)
    assert_hidden(record.api_key + record.payload, key)
    assert record.attempt == 3
    # The app's own handler and the root handlers present at start-up carry the filter.
    assert any(isinstance(f, RedactingFilter) for h in app.logger.handlers for f in h.filters)


@pytest.mark.parametrize("text", [
    "Provider openai-prod created by admin@example.com",
    "AI provider 3fa85f64-5717-4562-b3fc-2c963f66afa6 deleted with 2 keys",
    "request 9f1c2b7a4e8d4c6f8a0b1c2d3e4f5a6b took 12 ms",
    "key digest e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "key hint ...abcd shown",
    "GET /api/experimental/chats/ai-providers/3fa85f64-5717-4562-b3fc-2c963f66afa6/keys 200",
    "in test_secrets_in_exceptions_and_tracebacks_are_masked at tests/test_redaction.py:42",
    "token 3fa85f64-5717-4562-b3fc-2c963f66afa6 revoked by admin@example.com",
    "session_id=3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "dbcrypt rotate: 120 rows re-encrypted, 0 failed",
    "Bearer tokens are accepted on /api/",
    "database unavailable: OperationalError [request_id=9f1c2b7a4e8d4c6f8a0b1c2d3e4f5a6b]",
])
def test_ordinary_text_and_ids_stay_readable(text):
    assert redact(text) == text


@pytest.mark.parametrize("secret", [
    "sk-proj-" + "Ab3" * 15,
    "sk-ant-api03-" + "x9Y" * 30,
    "sk-or-v1-" + "0123456789abcdef" * 4,
    "sb_" + "Zx8_-" * 9,
    "gsk_" + "Q1w2E3r4" * 6,
    "hf_" + "AbCdEfGhIj" * 3 + "1234",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AIzaSyA1234567890abcdefghijklmnopqrstu",
    "Qk9xZ2VyTW9kZWwxMjM0NTY3ODkwYWJjZGVm",  # an opaque key without a known prefix
])
def test_key_shapes_are_masked(secret):
    for text in (secret, f"key={secret}", f"'{secret}'", f"(x {secret}) y", f"Authorization: Bearer {secret}"):
        assert_hidden(redact(text), secret)


@pytest.mark.parametrize("text", [
    "api_key=hunter2hunter2", "password: correct horse", '"secret": "s3cr3t-value"', "api-key: "
    "0123456789abcdef0123456789abcdef", "X-Api-Key: 0123456789abcdef0123456789abcdef", "client_secret=abcdefgh",
])
def test_values_after_key_ish_words_are_masked(text):
    masked = redact(text)
    assert MASK in masked
    value = text.split(":", 1)[-1] if ":" in text else text.split("=", 1)[-1]
    assert value.strip().strip('"').split()[0] not in masked


def test_redaction_is_idempotent():
    text = f"calling with api_key={new_key('idem')} and Bearer sb_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    once = redact(text)
    assert redact(once) == once
