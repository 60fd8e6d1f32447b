"""Key health (SPEC section 11): every stored key remembers its latest test or report, and a key
the provider refused is passed over.

- Results come from key tests (`app.services.key_testing`, pages and API) and from the chat
  backend: `POST /credentials` tells it which key it handed out (`key_id`), and
  `POST /credentials/report` (`report`) records how that key fared: `ok`, `invalid_key` or
  `forbidden`.
- A key whose latest result is `invalid_key` or `forbidden` is **failing**: resolution serves a
  provider with its oldest key that is not failing (`provider_keys_failing` when every one is),
  and a failing user key counts as absent. A later `ok` (or any result that is not a refusal)
  clears it; saving a new key starts fresh (`secrets.seal` clears the last test).
- Every table that holds a key is in `secrets.SECRET_COLUMNS`, which names its health columns
  too: provider keys, users' keys, and legacy providers' central keys and users' legacy keys.
- `KEY_MAX_AGE_DAYS` (0: off): shared keys older than that are due for rotation (`rotate_soon`).

Decisions where the SPEC is silent: a report answers 204 with no body; a report for a legacy
provider's central key uses the provider's id (what `POST /credentials` answers as `key_id` for
it); a keyless legacy provider (AWS Bedrock, `api_key: null`) has no key to report on. Reports
are audited as `credentials.report` with the key's id, its table and the result; a refused report
(malformed body, unknown key) changes and records nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.db import utcnow
from app.errors import InvalidInput, NotFound, Validation
from app.extensions import db
from app.models import FAILING_RESULTS
from app.services import audit
from app.services.base import Actor, parse_uuid, transaction
from app.services.secrets import SECRET_COLUMNS, SecretColumn

REPORTABLE = ("ok", "invalid_key", "forbidden")
RESULT_LABELS = {
    "ok": "Accepted",
    "invalid_key": "Refused: invalid key",
    "forbidden": "Refused: not allowed",
    "rate_limited": "Rate limited",
    "unreachable": "Provider unreachable",
    "timeout": "No answer in time",
    "unexpected_response": "Unexpected answer",
}
KEY_NOT_FOUND = "API key not found."


def is_failing(result: str | None) -> bool:
    """The provider refused the key the last time it was tried."""
    return result in FAILING_RESULTS


def failing(result_column: Any) -> sa.ColumnElement[bool]:
    """SQL: the key in this row is failing (false, not null, when it was never tested)."""
    return sa.func.coalesce(result_column.in_(FAILING_RESULTS), sa.false())


def record(spec: SecretColumn, key_id: uuid.UUID, result: str, when: datetime | None = None, *,
           saved_at: datetime | None = None) -> bool:
    """Remember `result` as the latest test of the key in `spec`'s row `key_id`. Flushes only
    (the caller's transaction commits). An UPDATE, never an insert: a key deleted meanwhile stays
    deleted (False). With `saved_at` (the row's `updated_at` when the key was read), only if the
    key was not saved anew since: a user key keeps its row id when replaced, and the result of a
    test of the old key must not mark the new one."""
    table = spec.model.__table__
    ciphertext = getattr(spec.model, spec.ciphertext_attr)
    unchanged = spec.model.updated_at == saved_at if saved_at is not None else sa.true()
    updated = db.session.execute(
        sa.update(spec.model)
        .where(spec.model.id == key_id, ciphertext.is_not(None), unchanged)
        .values({spec.tested_at_attr: when or utcnow(), spec.result_attr: result})
        .returning(table.c.id)
        .execution_options(synchronize_session=False)
    ).first()
    return updated is not None


def report(actor: Actor, key_id: Any, result: Any) -> None:
    """`POST /credentials/report`: the chat backend says how the key it was handed fared.

    :raise InvalidInput: a malformed body or key id, or a result other than ok, invalid_key and
        forbidden (a validation names the field). :raise NotFound: "API key not found." (no key
        has this id, e.g. it was deleted meanwhile; a report never brings a key back).
    """
    if result not in REPORTABLE:
        raise InvalidInput("Invalid report.", validations=[
            Validation("result", "Must be one of " + ", ".join(REPORTABLE) + ".")])
    key_id = parse_uuid(key_id, "Invalid key ID.", field="key_id")
    with transaction():
        for spec in SECRET_COLUMNS:
            if record(spec, key_id, result):
                audit.record(actor, "credentials.report", spec.resource_type, key_id, key_id=key_id, result=result,
                             failing=is_failing(result))
                return
        raise NotFound(KEY_NOT_FOUND)


def max_age() -> timedelta | None:
    """`KEY_MAX_AGE_DAYS` as a duration; None when off (0)."""
    days = int(current_app.config.get("KEY_MAX_AGE_DAYS") or 0)
    return timedelta(days=days) if days > 0 else None


def stale_before() -> datetime | None:
    """Shared keys created before this instant are due for rotation; None when the check is off."""
    age = max_age()
    return utcnow() - age if age is not None else None


def rotate_soon(created_at: datetime, cutoff: datetime | None) -> bool:
    """The key is older than `KEY_MAX_AGE_DAYS` (`cutoff` from `stale_before`)."""
    return cutoff is not None and created_at < cutoff


@dataclass(frozen=True)
class KeyHealth:
    """What the pages say about a stored key: its age, its last test, and what to do."""

    age_days: int
    last_tested_at: datetime | None
    last_test_result: str | None
    failing: bool
    rotate_soon: bool


def health_of(key: Any, now: datetime | None = None) -> KeyHealth:
    """The health of a provider key (or any row with `created_at` and the health columns)."""
    now = now or utcnow()
    return KeyHealth(
        age_days=max(0, (now - key.created_at).days),
        last_tested_at=key.last_tested_at,
        last_test_result=key.last_test_result,
        failing=is_failing(key.last_test_result),
        rotate_soon=rotate_soon(key.created_at, stale_before()),
    )
