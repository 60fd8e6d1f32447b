"""GET /metrics (SPEC section 11): the token guard, the exact names and labels, and each metric
counted by the action it counts. In this process the default registry is used; the same
actions under gunicorn with two workers (multiprocess mode) are tests/test_metrics_workers.py.

Counters are process-wide and only ever grow, so every test compares a scrape after the action
with a scrape before it."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import API, PASSWORD, Api, login, make_token, new_key

TOKEN = "metrics-token-" + "m" * 32


def scrape(client, token: str = TOKEN) -> dict[tuple[str, frozenset], float]:
    """Every sample of GET /metrics, keyed by (name, labels)."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.status_code
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics_on(app):
    app.config["METRICS_TOKEN"] = TOKEN
    return app.test_client()


# --- the guard ------------------------------------------------------------------------------------

def test_metrics_is_not_served_without_a_token_configured(app, client, admin):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    login(client, admin.email)
    assert client.get("/metrics").status_code == 404  # an admin's session is no way in either


def test_metrics_needs_the_bearer_token(app, metrics_on, admin):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
                    {"Authorization": f"Bearer {make_token(app, admin)}"}):
        response = metrics_on.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in response.get_data(as_text=True)
    ok = metrics_on.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.mimetype == "text/plain"
    assert "switchboard_http_requests_total" in ok.get_data(as_text=True)


# --- HTTP requests --------------------------------------------------------------------------------

def test_requests_are_counted_by_url_rule_never_by_path(app, metrics_on, admin_api):
    provider = admin_api.post("/ai-providers", json={"type": "openai", "name": "counted"}).get_json()
    rule = f"{API}/ai-providers/<provider_id>"
    before = scrape(metrics_on)
    for _ in range(3):
        assert admin_api.get(f"/ai-providers/{provider['id']}").status_code == 200
    assert admin_api.get(f"/ai-providers/{uuid.uuid4()}").status_code == 404
    assert metrics_on.get(f"/no/such/page/{uuid.uuid4()}").status_code == 404
    assert metrics_on.open("/healthz", method="BREW").status_code == 405
    after = scrape(metrics_on)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("switchboard_http_requests_total", method="GET", route=rule, status="200") == 3
    assert delta("switchboard_http_requests_total", method="GET", route=rule, status="404") == 1
    assert delta("switchboard_http_request_duration_seconds_count", method="GET", route=rule) == 4
    assert delta("switchboard_http_request_duration_seconds_sum", method="GET", route=rule) > 0
    assert delta("switchboard_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert delta("switchboard_http_requests_total", method="other", route="<unmatched>", status="405") == 1
    # No label carries an id, a path, an email or a token.
    text = metrics_on.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    for secret in (provider["id"], "/no/such/page", admin_api.token, "admin@example.com", "BREW"):
        assert secret not in text


# --- credentials hand-outs -------------------------------------------------------------------------

def test_each_credentials_hand_out_is_counted_by_its_result(app, metrics_on, admin_api, service_api, member):
    provider = admin_api.post("/ai-providers", json={"type": "openai", "name": "handouts"}).get_json()
    config = admin_api.post("/model-configs", json={"ai_provider_id": provider["id"], "model": "gpt-4o"}).get_json()
    ask = {"user_id": str(member.id), "model_config_id": config["id"]}
    before = scrape(metrics_on)
    assert service_api.post("/credentials", json=ask).get_json()["reason"] == "missing_api_key"
    admin_api.post(f"/ai-providers/{provider['id']}/keys", json={"api_key": new_key("handout")})
    assert service_api.post("/credentials", json=ask).get_json()["available"] is True
    assert service_api.post("/credentials", json=ask).status_code == 200
    assert service_api.post("/credentials", json={**ask, "user_id": str(uuid.uuid4())}).status_code == 404
    assert service_api.post("/credentials", json={**ask, "model_config_id": str(uuid.uuid4())}).status_code == 404
    assert service_api.post("/credentials", json={**ask, "user_id": "not-a-uuid"}).status_code == 400
    after = scrape(metrics_on)
    deltas = {result: value(after, "switchboard_credentials_handouts_total", result=result)
              - value(before, "switchboard_credentials_handouts_total", result=result)
              for result in ("available", "missing_api_key", "user_not_found", "config_not_found", "invalid_request")}
    assert deltas == {"available": 2, "missing_api_key": 1, "user_not_found": 1, "config_not_found": 1,
                      "invalid_request": 1}
    assert str(member.id) not in metrics_on.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(
        as_text=True)


# --- key tests ---------------------------------------------------------------------------------------

def test_key_tests_are_counted_by_result(app, metrics_on, admin_api, stubs):
    app.config["PRIVATE_BASE_URL_ALLOWLIST"] = "127.0.0.1"
    good, bad = stubs("ok"), stubs("401")
    results = []
    for stub in (good, bad, good):
        provider = admin_api.post("/ai-providers", json={"type": "openai", "name": f"t-{uuid.uuid4().hex[:8]}",
                                                         "base_url": stub.url + "/v1"}).get_json()
        key = admin_api.post(f"/ai-providers/{provider['id']}/keys", json={"api_key": new_key("tested")}).get_json()
        results.append((provider["id"], key["id"]))
    before = scrape(metrics_on)
    for provider_id, key_id in results:
        admin_api.post(f"/ai-providers/{provider_id}/keys/{key_id}/test", json={})
    after = scrape(metrics_on)
    assert value(after, "switchboard_key_tests_total", result="ok") - value(
        before, "switchboard_key_tests_total", result="ok") == 2
    assert value(after, "switchboard_key_tests_total", result="invalid_key") - value(
        before, "switchboard_key_tests_total", result="invalid_key") == 1


# --- sign-in -----------------------------------------------------------------------------------------

def test_sign_ins_are_counted_ok_failed_and_rate_limited(app, metrics_on, member):
    browser = app.test_client()
    before = scrape(metrics_on)
    assert login(browser, member.email).status_code == 302
    browser = app.test_client()
    statuses = [login(browser, member.email, "wrong password " + str(n)).status_code for n in range(7)]
    assert statuses == [401] * 5 + [429] * 2
    assert login(browser, member.email, PASSWORD).status_code == 429  # the right password too, once limited
    after = scrape(metrics_on)

    def delta(result):
        return (value(after, "switchboard_login_attempts_total", method="password", result=result)
                - value(before, "switchboard_login_attempts_total", method="password", result=result))

    assert (delta("ok"), delta("failed"), delta("rate_limited")) == (1, 5, 3)
    assert member.email not in metrics_on.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(
        as_text=True)


# --- the database going away -----------------------------------------------------------------------

def test_requests_the_database_cannot_answer_are_counted(app, make_app, metrics_on):
    from tests.support.stub_provider import closed_port

    unreachable = make_app(DATABASE_URL=f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/none",
                           METRICS_TOKEN=TOKEN)
    client = unreachable.test_client()
    before = scrape(client)
    token_api = Api(client, "sb_" + "x" * 43)
    for _ in range(2):
        response = token_api.get("/me")
        assert response.status_code == 503
        assert response.headers["Retry-After"]
    after = scrape(client)
    assert value(after, "switchboard_database_unavailable_total") - value(
        before, "switchboard_database_unavailable_total") == 2
