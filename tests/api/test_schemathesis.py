"""Schemathesis against the app in process, from the app's own /api/openapi.json.

Every operation, as an admin, a member, a service token and without a token; for each, 50
examples that fit the description (positive) and 50 that break it (negative), derandomized. The
checks: no 5xx, every status and body as described, negative data refused with a 4xx, and no
response that contains a stored key (the providers, legacy provider and users are seeded with
canary keys first; the `api_key` that POST /credentials hands to service tokens is the one
documented exception). Positive examples also use the seeded ids in their paths, so the routes
get past "not found" to their real work.

Outbound calls (key tests, model discovery) never leave the machine: the resolver and the
connector of `app.services.outbound` are replaced, so the seeded providers' host reaches a local
fake provider and every other host is unreachable at once.

A summary line (operations, examples, 5xx) goes to the terminal report.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.slow]

MAX_EXAMPLES = 50
# Read-only callers first in each example, the admin (who may change the data) last.
MODES = ("anonymous", "service", "member", "admin")


class _Summary:
    """Collects one line per mode and writes them in pytest's terminal summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.lines:
            terminalreporter.section("schemathesis")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def summary(request):
    plugin = _Summary()
    request.config.pluginmanager.register(plugin, "switchboard-schemathesis-summary")
    return plugin


PROVIDER_HOST = "models.example.com"
PROVIDER_ADDRESS = "93.184.215.14"  # what the fake resolver answers for PROVIDER_HOST; never contacted


class _FakeProvider(BaseHTTPRequestHandler):
    """Answers every GET like a provider listing its models (OpenAI/Anthropic and Google shapes)."""

    protocol_version = "HTTP/1.0"
    BODY = json.dumps({"object": "list", "data": [{"id": "gpt-4o"}, {"id": "claude"}],
                       "models": [{"name": "models/gemini", "supportedGenerationMethods": ["generateContent"]}]}).encode()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def no_network(monkeypatch):
    """Outbound calls stay on this machine: PROVIDER_HOST reaches a local fake provider, every
    other host fails at once as unreachable (no DNS lookup, no connection)."""
    from app.services import outbound

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeProvider)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    real_connect = outbound.connect

    def resolve(host, _port):
        if host == PROVIDER_HOST:
            return [PROVIDER_ADDRESS]
        raise OSError("no outbound network in tests")

    def connect(ip, _port, timeout):
        if ip == PROVIDER_ADDRESS:
            return real_connect("127.0.0.1", server.server_address[1], timeout)
        raise OSError("no outbound network in tests")

    monkeypatch.setattr(outbound, "resolve", resolve)
    monkeypatch.setattr(outbound, "connect", connect)
    yield
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def seed(app) -> dict:
    """Users, tokens, providers with canary keys, model configs, user keys, a legacy provider and
    groups (one with the member in it)."""
    from app.extensions import db
    from app.services import groups, legacy, model_configs, provider_keys, providers, user_keys
    from app.services.base import Actor
    from app.services.secrets import check_keys_against_database
    from tests.support import make_token, make_user, new_key

    admin = make_user(app, "admin@example.com", role="admin")
    member = make_user(app, "member@example.com")
    keys: list[str] = []

    def key(label: str) -> str:
        keys.append(new_key(label))
        return keys[-1]

    system = Actor.system("seed")
    with app.app_context():
        check_keys_against_database()
        url = f"http://{PROVIDER_HOST}/v1"
        shared = providers.create_provider(system, type="openai", name="shared", base_url=url)
        preferred = providers.create_provider(system, type="anthropic", name="preferred", key_policy="user_preferred",
                                              base_url=url)
        user_only = providers.create_provider(system, type="openai-compat", name="own-keys", key_policy="user_only",
                                              base_url=url)
        disabled = providers.create_provider(system, type="google", name="off", enabled=False, base_url=url)
        provider_ids = [str(p.id) for p in (shared, preferred, user_only, disabled)]
        key_ids = {str(shared.id): [str(provider_keys.add_key(system, shared.id, key("shared")).id) for _ in range(2)],
                   str(preferred.id): [str(provider_keys.add_key(system, preferred.id, key("preferred")).id)],
                   str(disabled.id): [str(provider_keys.add_key(system, disabled.id, key("off")).id)]}
        config_ids = [str(model_configs.create_config(system, ai_provider_id=pid, model=model).id)
                      for pid, model in ((shared.id, "gpt-4o"), (preferred.id, "claude"), (user_only.id, "local"))]
        for user, pid in ((member, preferred.id), (member, user_only.id), (admin, user_only.id)):
            actor = Actor.for_user(db.session.get(type(member), user.id))
            user_keys.upsert_user_key(actor, pid, key(f"user-{pid}"))
        chat = legacy.create_provider(system, provider="bedrock", display_name="Legacy", central_api_key_enabled=True,
                                      allow_user_api_key=True, allow_central_api_key_fallback=True,
                                      api_key=key("legacy"))
        legacy.set_user_key(Actor.for_user(db.session.get(type(member), member.id)), chat.id, key("legacy-user"))
        legacy_id = str(chat.id)
        team = groups.create_group(system, name="team", display_name="The team")
        groups.add_member(system, team.id, member.id)
        group_ids = [str(team.id), str(groups.create_group(system, name="empty").id)]
    return {
        "tokens": {"admin": make_token(app, admin), "member": make_token(app, member),
                   "service": make_token(app, admin, service=True), "anonymous": None},
        "user_ids": [str(admin.id), str(member.id)],
        "provider_ids": provider_ids,
        "key_ids": key_ids,
        "config_ids": config_ids,
        "legacy_id": legacy_id,
        "group_ids": group_ids,
        "keys": keys,
    }


def seeded_paths(operation, data: dict) -> list[dict]:
    """Path parameters made of seeded ids (right and wrong pairings both)."""
    names = set(re.findall(r"{(\w+)}", operation.path))
    legacy = "/providers/" in operation.path or "/user-provider-configs/" in operation.path
    if names == {"provider_id", "key_id"}:
        pairs = [{"provider_id": pid, "key_id": kid} for pid, kids in data["key_ids"].items() for kid in kids]
        pairs.append({"provider_id": data["provider_ids"][2], "key_id": data["key_ids"][data["provider_ids"][0]][0]})
        return pairs
    if names == {"provider_id"}:
        ids = [data["legacy_id"], data["provider_ids"][0]] if legacy else data["provider_ids"]
        return [{"provider_id": pid} for pid in ids]
    if names == {"config_id"}:
        return [{"config_id": cid} for cid in data["config_ids"]]
    if names == {"group_id"}:
        return [{"group_id": gid} for gid in data["group_ids"]]
    if names == {"group_id", "user_id"}:
        return [{"group_id": gid, "user_id": uid} for gid in data["group_ids"] for uid in data["user_ids"]]
    return []


def leak_check(keys: list[str]):
    def no_stored_key_in_response(ctx, response, case):
        text = response.text or ""
        if case.operation.definition.raw.get("operationId") == "hand_out_credentials" and response.status_code == 200:
            body = json.loads(text)
            assert body["api_key"] in keys  # handed out on purpose: the one documented exception
            text = json.dumps({k: v for k, v in body.items() if k != "api_key"})
        headers = json.dumps(dict(response.headers))
        leaked = [k for k in keys if k in text or k in headers or k[-12:] in text]
        assert not leaked, f"a stored key appears in the response of {case.operation.label}"
        return None

    return no_stored_key_in_response


@dataclass
class Tally:
    examples: Counter = field(default_factory=Counter)  # (mode, operation label) -> examples sent
    generations: Counter = field(default_factory=Counter)  # positive / negative
    statuses: Counter = field(default_factory=Counter)  # (mode, status class) -> responses
    failures: list[str] = field(default_factory=list)


def fuzz(app, operation, data: dict, tally: Tally) -> None:
    """50 examples of one operation, each sent in every mode and checked."""
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              negative_data_rejection, leak_check(data["keys"])]
    headers = {mode: {"Authorization": f"Bearer {token}"} if token else {} for mode, token in data["tokens"].items()}
    positive = [operation.as_strategy(GenerationMode.POSITIVE)]
    positive += [operation.as_strategy(GenerationMode.POSITIVE, path_parameters=p) for p in seeded_paths(operation, data)]
    if operation.label.endswith("/credentials"):
        positive += [operation.as_strategy(GenerationMode.POSITIVE, body={"user_id": uid, "model_config_id": cid})
                     for uid in data["user_ids"] for cid in data["config_ids"]]
    strategy = st.one_of(st.one_of(positive), operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=strategy)
    def run(case):
        tally.generations[case.meta.generation.mode.value if case.meta else "?"] += 1
        for mode in MODES:
            response = case.call(app=app, headers=headers[mode])
            tally.examples[(mode, operation.label)] += 1
            tally.statuses[(mode, response.status_code // 100)] += 1
            try:
                case.validate_response(response, checks=checks, headers=headers[mode])
            except (Exception, BaseExceptionGroup) as error:
                error.add_note(f"mode: {mode}")
                raise

    try:
        run()
    except (Exception, BaseExceptionGroup) as error:  # every operation's failure is reported, not only the first
        tally.failures.append(f"{operation.label}:\n{error}")


@pytest.mark.postgres_only
def test_every_operation_in_every_mode_holds_to_its_description(app, summary, no_network):
    import schemathesis

    from tests.conftest import truncate_all

    app.config["OUTBOUND_RATE_LIMIT"] = "100000 per minute"
    spec = app.test_client().get("/api/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in spec["paths"].values())
    started = time.monotonic()
    tally = Tally()
    for operation in operations:
        truncate_all(app)  # each operation starts from the same seeded state
        fuzz(app, operation, seed(app), tally)

    elapsed = time.monotonic() - started
    for mode in MODES:
        counts = [tally.examples[(mode, op.label)] for op in operations]
        line = (f"schemathesis [{mode}]: {len(operations)} operations, {sum(counts)} examples "
                f"(at least {min(counts)} per operation), 5xx: {tally.statuses[(mode, 5)]}, "
                f"2xx: {tally.statuses[(mode, 2)]}, 4xx: {tally.statuses[(mode, 4)]}")
        summary.lines.append(line)
        print(line)
    line = (f"schemathesis: {sum(tally.generations.values())} generated cases "
            f"({tally.generations['positive']} positive, {tally.generations['negative']} negative), "
            f"each sent in {len(MODES)} modes, {elapsed:.0f} s")
    summary.lines.append(line)
    print(line)
    assert not tally.failures, "\n\n".join(tally.failures)
    assert sum(tally.statuses[(mode, 5)] for mode in MODES) == 0
    assert min(tally.examples[(mode, op.label)] for mode in MODES for op in operations) >= MAX_EXAMPLES


def test_the_leak_check_catches_a_stored_key_in_a_body_or_a_header():
    from types import SimpleNamespace

    key = "sk-canary-leak-0123456789abcdef0123456789"
    check = leak_check([key])

    def case(operation_id: str):
        operation = SimpleNamespace(label="GET /x", definition=SimpleNamespace(raw={"operationId": operation_id}))
        return SimpleNamespace(operation=operation)

    def response(text: str, headers: dict | None = None, status: int = 200):
        return SimpleNamespace(text=text, headers=headers or {}, status_code=status)

    assert check(None, response('{"hint": "...6789"}'), case("get_me")) is None
    for leaky in (response(f'{{"key": "{key}"}}'), response("{}", {"X-Debug": key}),
                  response(f'{{"tail": "{key[-12:]}"}}')):
        with pytest.raises(AssertionError, match="stored key"):
            check(None, leaky, case("get_me"))
    handed_out = f'{{"api_key": "{key}", "available": true}}'
    assert check(None, response(handed_out), case("hand_out_credentials")) is None
    with pytest.raises(AssertionError, match="stored key"):
        check(None, response(f'{{"api_key": "{key}", "base_url": "{key}"}}'), case("hand_out_credentials"))


# --- bugs schemathesis found, kept as plain regression tests on both databases ----------------


def test_an_offset_beyond_64_bits_is_refused_not_a_500(admin_api):
    response = admin_api.get("/ai-providers?offset=31516485687857700864")
    assert response.status_code == 400
    assert response.get_json()["validations"][0]["field"] == "offset"
    assert admin_api.get(f"/ai-providers?offset={2**63 - 1}").status_code == 200


@pytest.mark.parametrize(("path", "body", "message", "field"), [
    ("/model-configs", {"model": "gpt\x00"}, "Invalid model.", "model"),
    ("/model-configs", {"model": "gpt", "display_name": "GPT\x00"}, "Invalid display name.", "display_name"),
    ("/keys", {"api_key": "sk-0123456789abcdef\x00"}, "Invalid API key.", None),
    ("/keys", {"api_key": "sk-0123\x01456789abcdef"}, "Invalid API key.", None),
])
def test_a_nul_character_in_a_body_is_refused_not_a_500(app, admin_api, path, body, message, field):
    """PostgreSQL text columns refuse NUL: it used to reach the INSERT and answer 500."""
    provider_id = admin_api.post("/ai-providers", json={"type": "openai", "name": "nul"}).get_json()["id"]
    if path == "/keys":
        path = f"/ai-providers/{provider_id}/keys"
    else:
        body = {"ai_provider_id": provider_id, **body}
    response = admin_api.post(path, json=body)
    assert response.status_code == 400
    assert response.get_json()["message"] == message
    if field:
        assert [v["field"] for v in response.get_json()["validations"]] == [field]
    assert admin_api.get("/model-configs").get_json() == []
    assert admin_api.get(f"/ai-providers/{provider_id}/keys").get_json() == []


def test_a_control_character_in_a_user_key_is_refused(app, admin_api, member_api):
    provider_id = admin_api.post("/ai-providers", json={"type": "openai", "name": "byok",
                                                        "key_policy": "user_only"}).get_json()["id"]
    response = member_api.put(f"/user-ai-provider-keys/{provider_id}", json={"api_key": "sk-0123456789abcdef\x00"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "Invalid API key."
    assert member_api.get("/user-ai-provider-keys").get_json()[0]["has_user_api_key"] is False


def test_a_nul_character_in_a_form_is_refused_not_a_500(app, admin, admin_api, client):
    """The same bug on the pages: the model config form and the provider key form."""
    from tests.support import login, post_form

    provider_id = admin_api.post("/ai-providers", json={"type": "openai", "name": "nul"}).get_json()["id"]
    login(client, "admin@example.com")
    response = post_form(client, "/admin/model-configs/new", {
        "ai_provider_id": provider_id, "model": "gpt\x00", "context_limit": "1000", "compression_threshold": "50",
        "options": "{}"})
    assert response.status_code == 400
    response = post_form(client, f"/admin/providers/{provider_id}/keys", {"api_key": "sk-0123456789abcdef\x00"},
                         csrf_path=f"/admin/providers/{provider_id}")
    assert response.status_code == 400
    assert client.get("/admin/audit?action=\x00").status_code == 400
    assert admin_api.get("/model-configs").get_json() == []
    assert admin_api.get(f"/ai-providers/{provider_id}/keys").get_json() == []
