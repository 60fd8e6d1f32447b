"""Testing keys and discovering models (SPEC section 6a): one cheap authenticated call per provider.

Each provider type has one endpoint for a key test and one for the model list, both the
cheapest authenticated reads it offers:

| type | key test | models | key sent as |
|---|---|---|---|
| openai, openai-compat | GET {base}/models | same | `Authorization: Bearer` |
| openrouter | GET {base}/key (its /models is public) | GET {base}/models | `Authorization: Bearer` |
| vercel | GET {base}/credits (its /models is public) | GET {base}/models | `Authorization: Bearer` |
| anthropic | GET {base}/v1/models?limit=1 | ?limit=1000 | `x-api-key` + `anthropic-version` |
| google | GET {base}/v1beta/models?pageSize=1 | ?pageSize=1000 | `x-goog-api-key` |
| azure | GET {base}/openai/models?api-version=2024-10-21 | same | `api-key` |

An empty base URL means the type's public endpoint (`DEFAULT_BASE_URLS`); Azure and
OpenAI-compatible providers need one. A base URL that already ends in the version segment
(`.../v1`, `.../v1beta`, `.../openai`, `.../openai/v1`) is not given it twice.

AWS Bedrock is not tested: its requests are signed with AWS credentials (SigV4), not sent with a
single key, so `test_*` and `discover_models` answer 400 "Testing AWS Bedrock keys is not
supported yet." and nothing is sent anywhere.

Answers map to results: 2xx `ok`, 401 `invalid_key` (Google also answers 400 for a bad key),
403 `forbidden`, 429 `rate_limited`, no connection (DNS, refused, refused address, TLS)
`unreachable`, timeouts `timeout`, anything else (3xx, other 4xx, 5xx, oversized or malformed
body) `unexpected_response`. Each comes with a sentence written here; nothing the provider sent
is passed on, except the model ids of a successful discovery.

Model discovery reads the first page only (up to 1000 models for Anthropic and Google; OpenAI-style
lists are not paged) and keeps at most `MAX_MODELS` ids of at most 256 printable characters.

No database transaction is held during the outbound call (nor, on SQLite, the write lock): the
provider and key are read and decrypted first, the session is released, the call is made, then
the result is written to the audit log in a short transaction of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from app import metrics
from app.crypto import DecryptionError
from app.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from app.extensions import db
from app.models import TEST_RESULTS, AIProvider, AIProviderKey, ChatModelConfig, UserAIProviderKey
from app.services import audit, key_health, outbound, provider_keys, providers, secrets, user_keys
from app.services.base import Actor, parse_uuid, require_byok, transaction
from app.services.own_keys import check_accepts_keys
from app.services.resolution import UNREADABLE_KEY, UNREADABLE_KEY_DETAIL

RESULTS = TEST_RESULTS  # SPEC section 6a: what a test can find
MAX_MODELS = 2000
MODEL_ID_MAX = 256
ANTHROPIC_VERSION = "2023-06-01"
AZURE_API_VERSION = "2024-10-21"

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "google": "https://generativelanguage.googleapis.com",
    "openrouter": "https://openrouter.ai/api/v1",
    "vercel": "https://ai-gateway.vercel.sh/v1",
}

USER_KEY_NOT_FOUND = "User API key not found."
NO_PROVIDER_KEY = "AI provider has no API key."
BEDROCK_UNSUPPORTED = "Testing AWS Bedrock keys is not supported yet."
BEDROCK_DETAIL = ("Bedrock requests are signed with AWS credentials (SigV4), so a single API key cannot be "
                  "checked on its own. Nothing was sent.")


@dataclass(frozen=True)
class KeyTestResult:
    """The outcome of one call: `result` (one of RESULTS) and a sentence for a person."""

    result: str
    message: str
    provider_name: str = ""
    key_hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"result": self.result, "message": self.message}


class ProviderCallFailed(DomainError):
    """Model discovery got no model list: 502 (504 on a timeout), `detail` is the result."""

    status = 502

    def __init__(self, outcome: KeyTestResult) -> None:
        super().__init__(outcome.message, detail=outcome.result)
        self.result = outcome.result
        if outcome.result == "timeout":
            self.status = 504


def supports_testing(provider_type: str) -> bool:
    """Whether keys of this provider type can be tested and its models listed (not Bedrock)."""
    return provider_type in _APIS


# --- use cases ---------------------------------------------------------------------------------

def test_provider_key(actor: Actor, provider_id: Any, key_id: Any) -> KeyTestResult:
    """Send one of a provider's keys to the provider's cheapest authenticated endpoint (admins).

    Disabled providers may be tested (e.g. before enabling them). The result goes to the audit
    log, never the key.

    :raise Forbidden: not an admin. :raise InvalidInput: malformed id, Bedrock, no base URL.
    :raise NotFound: "AI provider not found." / "AI provider key not found."
    """
    _require_admin(actor)
    pid, kid = parse_uuid(provider_id), parse_uuid(key_id, field="key_id")
    provider = providers.get_provider(pid)
    key = db.session.execute(
        sa.select(AIProviderKey).where(AIProviderKey.id == kid, AIProviderKey.provider_id == pid)
    ).scalar_one_or_none()
    if key is None:
        raise NotFound(provider_keys.KEY_NOT_FOUND)
    return _test_key(actor, provider, key, "provider_key.test", "ai_provider_key")


def test_user_key(actor: Actor, provider_id: Any) -> KeyTestResult:
    """Send the caller's own key for a provider to the provider (the key's owner only).

    Checked in the order of saving a key: BYOK off 403, malformed id 400, missing provider 404,
    disabled 400, `provider_only` 400; then no key of the caller's 404.

    :raise Forbidden: no user, or "BYOK is disabled." :raise InvalidInput: :raise NotFound:
    """
    if actor.user is None or actor.is_service:
        raise Forbidden()
    require_byok()
    pid = parse_uuid(provider_id, field="provider_id")
    kind = user_keys.AI_PROVIDER_KEYS
    provider = check_accepts_keys(kind, db.session.execute(kind.provider_query(pid)).scalar_one_or_none())
    key = db.session.execute(
        sa.select(UserAIProviderKey).where(UserAIProviderKey.user_id == actor.user_id,
                                           UserAIProviderKey.ai_provider_id == pid)
    ).scalar_one_or_none()
    if key is None:
        raise NotFound(USER_KEY_NOT_FOUND)
    return _test_key(actor, provider, key, "user_key.test", "user_ai_provider_key")


def _test_key(actor: Actor, provider: AIProvider, key: Any, action: str, resource_type: str) -> KeyTestResult:
    """Send `key` to the provider (outside any transaction); remember the result as the key's
    latest test (key health: a refusal marks it failing, anything else clears that) and audit it,
    never the key. A key deleted during the call stays deleted."""
    call = _prepare(provider, _open(key), purpose="test")
    provider_id, key_id, hint, spec, saved_at = provider.id, key.id, key.hint, secrets.spec_for(key), key.updated_at
    _release_session(actor)
    outcome = _run(call)
    with transaction():
        key_health.record(spec, key_id, outcome.result, saved_at=saved_at)
        audit.record(actor, action, resource_type, key_id, provider_id=provider_id,
                     result=outcome.result, status=call.status)
    metrics.count_key_test(outcome.result)
    return KeyTestResult(outcome.result, outcome.message, call.provider_name, hint)


def discover_models(actor: Actor, provider_id: Any) -> list[str]:
    """The model ids the provider serves, asked with the key that serves it (its oldest not refused; admins); sorted, unique.

    :raise Forbidden: not an admin. :raise NotFound: "AI provider not found."
    :raise InvalidInput: "AI provider has no API key.", Bedrock, no base URL.
    :raise ProviderCallFailed: 502/504 with the result as detail when no model list came back.
    """
    _require_admin(actor)
    pid = parse_uuid(provider_id)
    provider = providers.get_provider(pid)
    # The key that serves the provider's requests (its oldest the provider has not refused),
    # else its oldest: a refused key is passed over here as in resolution (key health).
    key = provider_keys.serving_key(pid) or provider_keys.oldest_key(pid)
    if key is None:
        raise InvalidInput(NO_PROVIDER_KEY, detail="Add an API key to this provider to discover its models.")
    call = _prepare(provider, _open(key), purpose="models")
    _release_session(actor)
    outcome = _run(call)
    models = call.models if outcome.result == "ok" else []
    with transaction():
        audit.record(actor, "provider.discover_models", "ai_provider", pid, result=outcome.result,
                     status=call.status, model_count=len(models))
    if outcome.result != "ok":
        raise ProviderCallFailed(outcome)
    return models


def configured_models(provider_id: Any) -> set[str]:
    """Models that already have a live config on this provider (to mark them on the discover page)."""
    pid = parse_uuid(provider_id)
    return set(db.session.execute(
        sa.select(ChatModelConfig.model).where(ChatModelConfig.ai_provider_id == pid,
                                               ChatModelConfig.deleted.is_(False))
    ).scalars())


# --- provider specifics --------------------------------------------------------------------------

def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _anthropic_headers(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}


def _data_ids(doc: Any) -> list[Any]:
    """OpenAI-style lists (also Anthropic, Azure, OpenRouter, Vercel): {"data": [{"id": ...}]}."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError("no data list")
    return [item.get("id") for item in doc["data"] if isinstance(item, dict)]


def _google_ids(doc: Any) -> list[Any]:
    """{"models": [{"name": "models/gemini-...", "supportedGenerationMethods": [...]}]}; only
    models that can generate content (chat), without the "models/" prefix. No key: no models."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models", []), list):
        raise ValueError("no models list")
    ids = []
    for item in doc.get("models", []):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        methods = item.get("supportedGenerationMethods")
        if isinstance(methods, list) and "generateContent" not in methods:
            continue
        name = item["name"]
        ids.append(name[len("models/"):] if name.startswith("models/") else name)
    return ids


@dataclass(frozen=True)
class _Api:
    test_path: str    # after the version segment, with its query
    models_path: str
    headers: Callable[[str], dict[str, str]]
    model_ids: Callable[[Any], list[Any]]
    version: str = ""  # added after the base URL unless it already ends with one of `versions`
    versions: tuple[str, ...] = ()
    invalid_key_statuses: frozenset[int] = frozenset({401})


_OPENAI_STYLE = _Api("/models", "/models", _bearer, _data_ids)
_AZURE_MODELS = f"/models?api-version={AZURE_API_VERSION}"
_APIS: dict[str, _Api] = {
    "openai": _OPENAI_STYLE,
    "openai-compat": _OPENAI_STYLE,
    "openrouter": _Api("/key", "/models", _bearer, _data_ids),
    "vercel": _Api("/credits", "/models", _bearer, _data_ids),
    "anthropic": _Api("/models?limit=1", "/models?limit=1000", _anthropic_headers, _data_ids, "/v1", ("/v1",)),
    "google": _Api("/models?pageSize=1", "/models?pageSize=1000", lambda key: {"x-goog-api-key": key},
                   _google_ids, "/v1beta", ("/v1beta", "/v1", "/v1alpha"), frozenset({400, 401})),
    "azure": _Api(_AZURE_MODELS, _AZURE_MODELS, lambda key: {"api-key": key}, _data_ids, "/openai", ("/openai",)),
}


@dataclass
class _Call:
    """Everything one outbound call needs, copied out of the database rows."""

    url: str
    headers: dict[str, str] = field(repr=False)
    sendable: bool
    api: _Api
    label: str
    provider_name: str
    purpose: str
    status: int | None = None
    models: list[str] = field(default_factory=list)


def _prepare(provider: AIProvider, plaintext: str, *, purpose: str) -> _Call:
    """:raise InvalidInput: Bedrock, or a type that needs a base URL has none."""
    api = _APIS.get(provider.type)
    if api is None:
        raise InvalidInput(BEDROCK_UNSUPPORTED, detail=BEDROCK_DETAIL)
    label = providers.TYPE_LABELS.get(provider.type, provider.type)
    base = provider.base_url or DEFAULT_BASE_URLS.get(provider.type, "")
    if not base:
        raise InvalidInput("AI provider has no base URL.",
                           detail=f"{label} providers need a base URL to be tested. Set it on the provider.")
    path = api.test_path if purpose == "test" else api.models_path
    if provider.type == "azure" and urlsplit(base).path.rstrip("/").endswith("/openai/v1"):
        url = _join(base, "/models")  # the v1 API takes no api-version
    else:
        url = _join(base, path, api.version, api.versions)
    return _Call(url=url, headers=api.headers(plaintext), sendable=all(0x20 <= ord(ch) <= 0x7E for ch in plaintext),
                 api=api, label=label, provider_name=provider.display_name or provider.name, purpose=purpose)


def _join(base: str, path: str, version: str = "", versions: tuple[str, ...] = ()) -> str:
    """`base` + `version` + `path`, merging both queries; the version is left out when the base
    URL already ends with one (`https://api.anthropic.com/v1` is not given a second `/v1`)."""
    parts = urlsplit(base)
    base_path = parts.path.rstrip("/")
    if version and not any(base_path.endswith(v) for v in versions):
        base_path += version
    path, _, query = path.partition("?")
    queries = [q for q in (parts.query, query) if q]
    return f"{parts.scheme}://{parts.netloc}{base_path}{path}" + (f"?{'&'.join(queries)}" if queries else "")


def _run(call: _Call) -> KeyTestResult:
    """Make the call and say what it means. Never raises for what the provider does."""
    if not call.sendable:
        return KeyTestResult("invalid_key", "The key contains characters that cannot be sent in an HTTP header, "
                                            "so no provider would accept it. Nothing was sent.")
    parse = _model_list(call.api) if call.purpose == "models" else _json_object
    try:
        reply = outbound.get(call.url, call.headers, parse=parse)
    except outbound.OutboundError as error:
        return KeyTestResult(error.result, error.message)
    call.status = reply.status
    outcome = _meaning(reply.status, call)
    if outcome.result == "ok" and call.purpose == "models":
        call.models = reply.value
        count = len(call.models)
        return KeyTestResult("ok", f"{call.label} listed {count} model{'' if count == 1 else 's'}.")
    return outcome


def _meaning(status: int, call: _Call) -> KeyTestResult:
    label = call.label
    if 200 <= status < 300:
        return KeyTestResult("ok", f"The key works: {label} accepted it.")
    if status in call.api.invalid_key_statuses:
        return KeyTestResult("invalid_key", f"{label} rejected the key as invalid (HTTP {status}). Check that it "
                                            "was copied in full and has not been revoked.")
    if status == 403:
        return KeyTestResult("forbidden", f"{label} recognised the key but refused access (HTTP 403). Check the "
                                          "key's permissions, project or billing.")
    if status == 429:
        return KeyTestResult("rate_limited", f"{label} is rate limiting this key (HTTP 429). Wait a minute and "
                                             "try again; the key itself may be fine.")
    if status == 404:
        return KeyTestResult("unexpected_response", f"{label} answered HTTP 404 Not Found. Check the provider's "
                                                    "base URL.")
    if status >= 500:
        return KeyTestResult("unexpected_response", f"{label} answered with a server error (HTTP {status}). "
                                                    "Try again later.")
    return KeyTestResult("unexpected_response", f"{label} answered with an unexpected status (HTTP {status}).")


def _parse_json(body: bytes) -> Any:
    return json.loads(body)  # ValueError / RecursionError: the client reports unexpected_response


def _json_object(body: bytes) -> None:
    """A key test's 2xx answer must at least be a JSON object (not, say, a captive portal page)."""
    if not isinstance(_parse_json(body), dict):
        raise ValueError("not a JSON object")


def _model_list(api: _Api) -> Callable[[bytes], list[str]]:
    def parse(body: bytes) -> list[str]:
        return _clean_ids(api.model_ids(_parse_json(body)))

    return parse


def _clean_ids(raw: list[Any]) -> list[str]:
    """Printable strings of 1..256 characters, unique, sorted, at most MAX_MODELS."""
    ids = {item.strip() for item in raw if isinstance(item, str)}
    ids = {i for i in ids if 0 < len(i) <= MODEL_ID_MAX and i.isprintable()}
    return sorted(ids)[:MAX_MODELS]


# --- helpers -----------------------------------------------------------------------------------

def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden()


def _open(row: Any) -> str:
    try:
        return secrets.open_secret(row)
    except DecryptionError:
        raise Conflict(UNREADABLE_KEY, detail=UNREADABLE_KEY_DETAIL) from None


def _release_session(actor: Actor) -> None:
    """End the request's database transaction before a slow outbound call.

    Closing (not committing) the session keeps every loaded object usable, detached: the actor's
    user stays readable for the audit record and the page that follows, without a query that
    would open a new transaction (and, on SQLite, take the write lock) during the call.
    """
    _ = actor.user_id  # loads the user's columns now, while the session is still open
    db.session.close()
