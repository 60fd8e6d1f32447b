"""The admin pages for AI providers and their keys, driven the way a browser does (forms + CSRF)."""

from __future__ import annotations

import html
import re
import uuid

import pytest
import sqlalchemy as sa

from tests.support import login, new_key, post_form

NAME_DETAIL = (
    "Names must use lowercase letters, numbers, and single hyphens, and cannot use the reserved agents- prefix."
)
LEAKED: list[str] = []  # every key a test stored; no page may contain one


def text(response) -> str:
    body = response.get_data(as_text=True)
    for key in LEAKED:
        assert key not in body, "a stored key appeared on a page"
    return body


def field_error(body: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="{field}-error">(.*?)</p>', body, re.S)
    assert match, f"no error next to {field}"
    return html.unescape(match.group(1))


def input_value(body: str, field: str) -> str | None:
    tag = re.search(rf'<input[^>]*\bname="{field}"[^>]*>', body)
    assert tag, f"no input {field}"
    value = re.search(r'\bvalue="([^"]*)"', tag.group(0))
    return html.unescape(value.group(1)) if value else None


def flashes(body: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<div class="flash flash-\w+">(.*?)</div>', body, re.S)]


def service_create(app, name, type="openai", **fields):
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        return str(providers.create_provider(Actor.system("test"), type=type, name=name, **fields).id)


def service_key(app, provider_id, key=None):
    from app.services import provider_keys
    from app.services.base import Actor

    key = key or new_key("page")
    LEAKED.append(key)
    with app.app_context():
        return str(provider_keys.add_key(Actor.system("test"), provider_id, key).id), key


def user_key(app, user, provider_id):
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services import secrets

    key = new_key("user")
    LEAKED.append(key)
    with app.app_context():
        row = UserAIProviderKey(id=uuid.uuid4(), user_id=user.id, ai_provider_id=uuid.UUID(provider_id))
        secrets.seal(row, key)
        db.session.add(row)
        db.session.commit()
    return key


def model_config(app, provider_id, model):
    from app.extensions import db
    from app.models import ChatModelConfig

    with app.app_context():
        db.session.add(ChatModelConfig(ai_provider_id=uuid.UUID(provider_id), provider="openai", model=model))
        db.session.commit()


def provider_row(app, provider_id):
    from app.extensions import db
    from app.models import AIProvider

    with app.app_context():
        row = db.session.get(AIProvider, uuid.UUID(provider_id))
        db.session.expunge_all()
        return row


def key_ids(app, provider_id):
    from app.extensions import db
    from app.models import AIProviderKey

    with app.app_context():
        return [str(k) for k in db.session.execute(
            sa.select(AIProviderKey.id).where(AIProviderKey.provider_id == uuid.UUID(provider_id))).scalars()]


CREATE = "/admin/providers/new"
VALID = {"type": "openai", "name": "openai-eu", "display_name": "OpenAI (EU)", "base_url": "",
         "key_policy": "provider_only", "enabled": "y"}


# --- list ------------------------------------------------------------------------------------


def test_empty_list_invites_to_add_a_provider(admin_client):
    body = text(admin_client.get("/admin/providers"))
    assert "No AI providers yet" in body
    assert 'href="/admin/providers/new"' in body


def test_list_shows_each_provider_with_its_facts(app, admin_client, member, member_b):
    a = service_create(app, "zeta", type="anthropic", display_name="Claude", key_policy="user_preferred")
    b = service_create(app, "alpha", type="openai-compat", enabled=False, key_policy="user_only")
    service_key(app, a)
    service_key(app, a)
    user_key(app, member, a)
    user_key(app, member_b, a)
    model_config(app, a, "claude-sonnet")
    model_config(app, a, "claude-haiku")
    model_config(app, a, "claude-opus")
    gone = service_create(app, "deleted-one")
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        providers.delete_provider(Actor.system("test"), gone)

    body = text(admin_client.get("/admin/providers"))
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>")[1], re.S)
    assert len(rows) == 2
    alpha, zeta = rows  # ordered by name
    assert "alpha" in alpha and "OpenAI-compatible" in alpha and "Disabled" in alpha
    assert "User key required" in alpha
    cells = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r'<td class="num"[^>]*>(.*?)</td>', alpha, re.S)]
    assert cells == [["0"], ["0"], ["0"]]  # no key, but user_only needs none: no warning
    assert "Claude" in zeta and "zeta" in zeta and "Anthropic" in zeta and "Enabled" in zeta
    assert "User key preferred" in zeta
    cells = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r'<td class="num"[^>]*>(.*?)</td>', zeta, re.S)]
    assert cells == [["2"], ["2"], ["3"]]
    assert "deleted-one" not in body
    assert f"/admin/providers/{b}" in body


def test_a_provider_without_a_shared_key_is_flagged(app, admin_client):
    service_create(app, "keyless")
    body = text(admin_client.get("/admin/providers"))
    assert "No key" in body


def test_list_is_paginated_by_50(app, admin_client):
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        for i in range(51):
            providers.create_provider(Actor.system("test"), type="openai", name=f"p{i:02d}")
    first = text(admin_client.get("/admin/providers"))
    assert first.count('<td class="actions">') == 50
    assert "Page 1 of 2" in first and "p49" in first and "p50" not in first
    second = text(admin_client.get("/admin/providers?page=2"))
    assert second.count('<td class="actions">') == 1 and "p50" in second
    beyond = text(admin_client.get("/admin/providers?page=9"))
    assert "Nothing on this page" in beyond


# --- create ----------------------------------------------------------------------------------


def test_create_form_offers_every_type_policy_and_explains_the_allow_list(admin_client):
    body = text(admin_client.get(CREATE))
    for label in ["OpenAI", "Anthropic", "Azure OpenAI", "AWS Bedrock", "Google", "OpenAI-compatible", "OpenRouter",
                  "Vercel AI Gateway"]:
        assert f">{label}</option>" in body
    for label in ["Shared key only", "User key preferred", "User key required"]:
        assert f">{label}</option>" in body
    assert re.search(r'<input[^>]*checked[^>]*name="enabled"|<input[^>]*name="enabled"[^>]*checked', body)
    assert "PRIVATE_BASE_URL_ALLOWLIST" in body


def test_create_provider_then_land_on_its_page(app, admin_client):
    response = post_form(admin_client, CREATE, {**VALID, "base_url": " HTTPS://API.OpenAI.com/v1/ ",
                                                "key_policy": "user_preferred"})
    assert response.status_code == 303
    provider_id = response.headers["Location"].split("/admin/providers/")[1].split("#")[0]
    row = provider_row(app, provider_id)
    assert (row.type, row.name, row.display_name, row.enabled, row.base_url, row.key_policy) == (
        "openai", "openai-eu", "OpenAI (EU)", True, "https://api.openai.com/v1", "user_preferred")
    page = admin_client.get(response.headers["Location"])
    body = text(page)
    assert "Provider openai-eu created." in " ".join(flashes(body))
    assert "No shared key yet" in body
    from tests.support.db import sql

    assert sql(app, "SELECT action, actor_label FROM audit_events WHERE action = 'provider.create'") == [
        ("provider.create", "admin@example.com")]


def test_create_disabled_provider_when_the_box_is_unchecked(app, admin_client):
    data = {k: v for k, v in VALID.items() if k != "enabled"}
    response = post_form(admin_client, CREATE, data)
    provider_id = response.headers["Location"].split("/admin/providers/")[1].split("#")[0]
    assert provider_row(app, provider_id).enabled is False


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"type": ""}, "type", "Invalid AI provider type."),
    ({"type": "mistral"}, "type", "Invalid AI provider type."),
    ({"name": ""}, "name", f"Invalid AI provider name. {NAME_DETAIL}"),
    ({"name": "Open AI"}, "name", f"Invalid AI provider name. {NAME_DETAIL}"),
    ({"name": "agents-openai"}, "name", f"Invalid AI provider name. {NAME_DETAIL}"),
    ({"name": "x" * 65}, "name", f"Invalid AI provider name. {NAME_DETAIL}"),
    ({"display_name": "d" * 129}, "display_name", "Invalid display name."),
    ({"base_url": "ftp://files.example.com"}, "base_url", "Invalid provider base URL."),
    ({"base_url": "http://169.254.169.254/latest"}, "base_url", "Invalid provider base URL."),
    ({"base_url": "http://127.0.0.1:11434"}, "base_url", "Invalid provider base URL."),
    ({"key_policy": "everyone"}, "key_policy", "Invalid key policy."),
])
def test_create_errors_appear_next_to_their_field_and_keep_the_other_values(app, admin_client, change, field, message):
    data = {**VALID, **change}
    response = post_form(admin_client, CREATE, data)
    assert response.status_code == 400
    body = text(response)
    assert field_error(body, field).startswith(message)
    for other in ("name", "display_name", "base_url"):
        if other != field:
            assert input_value(body, other) == data[other]
    from tests.support.db import sql

    assert sql(app, "SELECT count(*) FROM ai_providers") == [(0,)]


def test_create_shows_every_field_error_at_once(app, admin_client):
    data = {**VALID, "type": "", "name": "Bad Name", "base_url": "http://10.0.0.1", "key_policy": "x"}
    body = text(post_form(admin_client, CREATE, data))
    assert field_error(body, "type").startswith("Invalid AI provider type.")
    assert field_error(body, "name") == f"Invalid AI provider name. {NAME_DETAIL}"
    assert field_error(body, "base_url").startswith("Invalid provider base URL.")
    assert field_error(body, "key_policy").startswith("Invalid key policy.")
    assert 'id="display_name-error"' not in body
    assert input_value(body, "display_name") == "OpenAI (EU)"


def test_create_with_a_taken_name_says_so_next_to_the_name(app, admin_client):
    service_create(app, "openai-eu")
    response = post_form(admin_client, CREATE, {**VALID, "type": "azure"})
    assert response.status_code == 400
    body = text(response)
    assert field_error(body, "name") == "AI provider already exists."
    assert input_value(body, "display_name") == "OpenAI (EU)"
    assert re.search(r'<option selected value="azure">|<option value="azure" selected>', body)


def test_a_deleted_providers_name_can_be_reused_through_the_pages(app, admin_client):
    old = service_create(app, "openai-eu")
    post_form(admin_client, f"/admin/providers/{old}/delete")
    response = post_form(admin_client, CREATE, VALID)
    assert response.status_code == 303


def test_the_form_refuses_a_post_without_csrf(app, admin_client):
    response = admin_client.post(CREATE, data=VALID)
    assert response.status_code == 400
    from tests.support.db import sql

    assert sql(app, "SELECT count(*) FROM ai_providers") == [(0,)]


# --- edit ------------------------------------------------------------------------------------


def test_edit_form_is_filled_in_and_shows_the_type_read_only(app, admin_client):
    pid = service_create(app, "bedrock-us", type="bedrock", display_name="Bedrock US",
                         base_url="https://bedrock.example.com", key_policy="user_only")
    body = text(admin_client.get(f"/admin/providers/{pid}/edit"))
    assert input_value(body, "name") == "bedrock-us"
    assert input_value(body, "display_name") == "Bedrock US"
    assert input_value(body, "base_url") == "https://bedrock.example.com"
    assert re.search(r'<option selected value="user_only">|<option value="user_only" selected>', body)
    assert 'name="type"' not in body
    assert "AWS Bedrock" in body and "cannot be changed" in body
    assert "PRIVATE_BASE_URL_ALLOWLIST" in body


def test_edit_saves_changes_and_ignores_a_type(app, admin_client):
    pid = service_create(app, "old-name", display_name="Old")
    response = post_form(admin_client, f"/admin/providers/{pid}/edit", {
        "type": "anthropic", "name": "new-name", "display_name": "", "base_url": "https://llm.example.com/",
        "key_policy": "user_preferred",  # enabled unchecked
    })
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/admin/providers/{pid}")
    row = provider_row(app, pid)
    assert (row.type, row.name, row.display_name, row.enabled, row.base_url, row.key_policy) == (
        "openai", "new-name", "", False, "https://llm.example.com", "user_preferred")
    body = text(admin_client.get(response.headers["Location"]))
    assert "Changes saved." in flashes(body)
    assert "Disabled" in body
    assert "(the name)" in body  # display name falls back to the name


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"name": "taken"}, "name", "AI provider already exists."),
    ({"name": "Bad_Name"}, "name", f"Invalid AI provider name. {NAME_DETAIL}"),
    ({"name": "agents-x"}, "name", f"Invalid AI provider name. {NAME_DETAIL}"),
    ({"display_name": "d" * 129}, "display_name", "Invalid display name."),
    ({"base_url": "https://user:pw@api.example.com"}, "base_url", "Invalid provider base URL."),
    ({"key_policy": "nobody"}, "key_policy", "Invalid key policy."),
])
def test_edit_errors_appear_next_to_their_field_and_nothing_changes(app, admin_client, change, field, message):
    service_create(app, "taken")
    pid = service_create(app, "mine", display_name="Mine")
    data = {"name": "mine-renamed", "display_name": "Renamed", "base_url": "https://api.example.com",
            "key_policy": "user_only", "enabled": "y", **change}
    response = post_form(admin_client, f"/admin/providers/{pid}/edit", data)
    assert response.status_code == 400
    body = text(response)
    assert field_error(body, field).startswith(message)
    for other in ("name", "display_name", "base_url"):
        if other != field:
            assert input_value(body, other) == data[other]
    row = provider_row(app, pid)
    assert (row.name, row.display_name, row.base_url, row.key_policy) == ("mine", "Mine", "", "provider_only")


# --- detail and keys -------------------------------------------------------------------------


def test_detail_page_shows_settings_keys_and_counts_but_never_keys(app, admin_client, member, member_b):
    pid = service_create(app, "anthropic-main", type="anthropic", display_name="Anthropic",
                         key_policy="user_preferred", base_url="https://api.anthropic.com")
    first_id, first = service_key(app, pid)
    service_key(app, pid)
    user_key(app, member, pid)
    user_key(app, member_b, pid)
    model_config(app, pid, "claude-sonnet")
    body = text(admin_client.get(f"/admin/providers/{pid}"))
    assert "anthropic-main" in body and "https://api.anthropic.com" in body and "User key preferred" in body
    assert f"...{first[-4:]}" in body
    assert "In use" in body
    assert re.search(r"<dt>Users with their own key</dt><dd>2</dd>", body)
    assert re.search(r"<dt>Model configs</dt><dd>1</dd>", body)
    assert input_value(body, "api_key") == ""
    assert 'type="password"' in body
    assert f"/admin/providers/{pid}/keys/{first_id}/delete" in body


def test_detail_page_lists_who_holds_a_key_of_their_own_but_never_the_key(app, admin_client, member, member_b,
                                                                          monkeypatch):
    from tests.support import make_user

    pid = service_create(app, "byok-open", key_policy="user_preferred")
    other = service_create(app, "elsewhere", key_policy="user_preferred")
    mel, bo = user_key(app, member, pid), user_key(app, member_b, pid)
    user_key(app, make_user(app, "not-here@example.com", name="Not Here"), other)
    body = text(admin_client.get(f"/admin/providers/{pid}"))
    assert re.search(r"<dt>Users with their own key</dt><dd>2</dd>", body)
    holders = re.search(r'<table class="table key-holders">.*?</table>', body, re.S)
    assert holders, "no list of key holders"
    tbody = holders.group(0).split("<tbody>", 1)[1]
    rows = [re.sub(r"<[^>]+>", " ", row) for row in re.findall(r"<tr>(.*?)</tr>", tbody, re.S)]
    assert [" ".join(row.split()[:2]) for row in rows] == ["member@example.com Mel", "other@example.com Bo"]
    saved_at = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"
    assert all(re.search(saved_at, row) for row in rows)
    assert "not-here@example.com" not in body  # a key for another provider
    for key in (mel, bo):
        assert key[-4:] not in holders.group(0) and key[:-4] not in body  # neither the key nor its hint

    # Past the page's limit the count stays exact and the page says the list is cut short.
    from app.admin import providers as pages

    monkeypatch.setattr(pages, "KEY_HOLDERS_SHOWN", 1)
    body = text(admin_client.get(f"/admin/providers/{pid}"))
    assert re.search(r"<dt>Users with their own key</dt><dd>2</dd>", body)
    assert "member@example.com" in body and "other@example.com" not in body
    assert "The first 1 of 2 are listed, by email." in body


def test_a_provider_without_user_keys_lists_nobody(app, admin_client):
    pid = service_create(app, "nobody-yet", key_policy="user_preferred")
    body = text(admin_client.get(f"/admin/providers/{pid}"))
    assert re.search(r"<dt>Users with their own key</dt><dd>0</dd>", body)
    assert "key-holders" not in body


def test_test_buttons_and_in_use_follow_the_services(app, admin_client, monkeypatch):
    """The page shows what the services decide: which key serves requests (`serving_key`) and
    whether keys of this type can be tested and models discovered (`supports_testing`)."""
    from app.services import key_testing

    openai = service_create(app, "openai-main")
    bedrock = service_create(app, "bedrock-main", type="bedrock")
    first_id, _ = service_key(app, openai)
    second_id, _ = service_key(app, openai)
    service_key(app, bedrock)

    def badge_row(body):
        (row,) = [r for r in re.findall(r"<tr>(.*?)</tr>", body, re.S) if "In use" in r]
        return row

    body = text(admin_client.get(f"/admin/providers/{openai}"))
    assert f"/keys/{first_id}/delete" in badge_row(body)
    assert body.count(">Test</button>") == 2 and "Discover models" in body
    body = text(admin_client.get(f"/admin/providers/{bedrock}"))
    assert ">Test</button>" not in body and "Discover models" not in body

    # The provider refused the oldest key: the next one serves (key health), and the page says so.
    from app.services import key_health
    from app.services.secrets import SECRET_COLUMNS

    with app.app_context():
        key_health.record(SECRET_COLUMNS[0], uuid.UUID(first_id), "invalid_key")
        from app.extensions import db

        db.session.commit()
    monkeypatch.delitem(key_testing._APIS, "openai")  # say the service cannot test OpenAI keys
    body = text(admin_client.get(f"/admin/providers/{openai}"))
    assert f"/keys/{second_id}/delete" in badge_row(body)
    assert "Key refused" in next(r for r in re.findall(r"<tr>(.*?)</tr>", body, re.S) if f"/keys/{first_id}/" in r)
    assert ">Test</button>" not in body and "Discover models" not in body


def test_detail_page_says_when_byok_is_off_for_the_deployment(app, admin_client):
    pid = service_create(app, "byok", key_policy="user_only")
    assert "<dt>User keys</dt><dd>Allowed</dd>" in text(admin_client.get(f"/admin/providers/{pid}"))
    app.config["ALLOW_BYOK"] = False
    assert "Off for this deployment" in text(admin_client.get(f"/admin/providers/{pid}"))


def test_add_key_redirects_and_never_shows_the_key(app, admin_client):
    pid = service_create(app, "openai")
    key = new_key("form")
    LEAKED.append(key)
    response = post_form(admin_client, f"/admin/providers/{pid}/keys", {"api_key": f"  {key}  "},
                         csrf_path=f"/admin/providers/{pid}")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/admin/providers/{pid}#keys")
    assert key not in response.get_data(as_text=True)
    body = text(admin_client.get(response.headers["Location"]))  # the page right after saving
    assert f"Key ...{key[-4:]} saved." in " ".join(flashes(body))
    assert key[:-4] not in body
    assert input_value(body, "api_key") == ""
    assert len(key_ids(app, pid)) == 1
    from tests.support.db import sql

    assert [r[0] for r in sql(app, "SELECT action FROM audit_events WHERE resource_type = 'ai_provider_key'")] == [
        "provider_key.create"]


@pytest.mark.parametrize(("sent", "message"), [
    ("", "API key is required."),
    ("   ", "API key is required."),
    ("big", "API key too large. API key exceeds maximum size of 10240 bytes"),
    ("multibyte", "API key too large. API key exceeds maximum size of 10240 bytes"),
])
def test_add_key_errors_are_shown_next_to_the_field_with_an_empty_input(app, admin_client, sent, message):
    pid = service_create(app, "openai")
    if sent in ("big", "multibyte"):
        key = new_key("big")
        filler = "k" if sent == "big" else "é"  # é is 2 bytes
        sent = key + filler * ((10241 - len(key)) // len(filler.encode()) + 1)
        LEAKED.append(sent)
    response = post_form(admin_client, f"/admin/providers/{pid}/keys", {"api_key": sent},
                         csrf_path=f"/admin/providers/{pid}")
    assert response.status_code == 400
    body = text(response)
    assert field_error(body, "api_key") == message
    assert input_value(body, "api_key") == ""
    assert key_ids(app, pid) == []


def test_a_key_of_exactly_10240_bytes_is_accepted_through_the_form(app, admin_client):
    pid = service_create(app, "openai")
    key = new_key("edge")
    key += "é" * ((10240 - len(key)) // 2) + ("x" if (10240 - len(key)) % 2 else "")
    assert len(key.encode()) == 10240
    LEAKED.append(key)
    response = post_form(admin_client, f"/admin/providers/{pid}/keys", {"api_key": key},
                         csrf_path=f"/admin/providers/{pid}")
    assert response.status_code == 303
    assert len(key_ids(app, pid)) == 1


def test_a_duplicate_key_is_refused_without_echoing_it(app, admin_client):
    pid = service_create(app, "openai")
    _, key = service_key(app, pid)
    response = post_form(admin_client, f"/admin/providers/{pid}/keys", {"api_key": key},
                         csrf_path=f"/admin/providers/{pid}")
    assert response.status_code == 400
    body = text(response)
    assert field_error(body, "api_key") == "API key already exists."
    assert input_value(body, "api_key") == ""
    assert len(key_ids(app, pid)) == 1


def test_delete_key_asks_first_then_deletes(app, admin_client):
    pid = service_create(app, "openai")
    first_id, first = service_key(app, pid)
    second_id, _ = service_key(app, pid)
    path = f"/admin/providers/{pid}/keys/{first_id}/delete"
    confirm = text(admin_client.get(path))
    assert f"...{first[-4:]}" in confirm
    assert "in use now" in confirm
    assert sorted(key_ids(app, pid)) == sorted([first_id, second_id])  # a GET changes nothing
    response = post_form(admin_client, path)
    assert response.status_code == 303
    assert key_ids(app, pid) == [second_id]
    body = text(admin_client.get(response.headers["Location"]))
    assert "Key deleted." in " ".join(flashes(body))
    # confirming again (a second tab) says it is gone
    again = post_form(admin_client, path, csrf_path=f"/admin/providers/{pid}")
    assert "That key no longer exists here; nothing was deleted." in flashes(text(admin_client.get(again.headers["Location"])))
    assert admin_client.get(path).status_code == 404


def test_deleting_the_only_key_warns(app, admin_client):
    pid = service_create(app, "openai")
    key_id, _ = service_key(app, pid)
    assert "only shared key" in text(admin_client.get(f"/admin/providers/{pid}/keys/{key_id}/delete"))


def test_a_key_cannot_be_deleted_through_another_providers_page(app, admin_client):
    a = service_create(app, "a")
    b = service_create(app, "b")
    key_a, _ = service_key(app, a)
    assert admin_client.get(f"/admin/providers/{b}/keys/{key_a}/delete").status_code == 404
    response = post_form(admin_client, f"/admin/providers/{b}/keys/{key_a}/delete", csrf_path=f"/admin/providers/{b}")
    assert response.status_code == 303
    assert "That key no longer exists here; nothing was deleted." in flashes(text(admin_client.get(response.headers["Location"])))
    assert key_ids(app, a) == [key_a]


# --- delete provider -------------------------------------------------------------------------


def test_delete_provider_confirmation_says_what_goes_with_it(app, admin_client, member):
    pid = service_create(app, "doomed", display_name="Doomed")
    service_key(app, pid)
    service_key(app, pid)
    service_key(app, pid)
    user_key(app, member, pid)
    model_config(app, pid, "m1")
    model_config(app, pid, "m2")
    body = re.sub(r"\s+", " ", text(admin_client.get(f"/admin/providers/{pid}/delete")))
    assert "<strong>3</strong> shared API keys" in body
    assert "<strong>1</strong> user key that" in body
    assert "<strong>2</strong> model configs" in body
    assert provider_row(app, pid).deleted is False  # a GET changes nothing
    response = post_form(admin_client, f"/admin/providers/{pid}/delete")
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/providers")
    listing = text(admin_client.get("/admin/providers"))
    assert "Provider doomed deleted, with 3 shared keys, 1 user key and 2 model configs." in flashes(listing)
    assert "No AI providers yet" in listing
    row = provider_row(app, pid)
    assert row.deleted is True and row.enabled is False
    assert key_ids(app, pid) == []
    assert admin_client.get(f"/admin/providers/{pid}").status_code == 404
    assert admin_client.get(f"/admin/providers/{pid}/delete").status_code == 404
    assert post_form(admin_client, f"/admin/providers/{pid}/delete", csrf_path="/admin/providers").status_code == 404


@pytest.mark.parametrize("suffix", ["", "/edit", "/delete"])
def test_unknown_or_malformed_provider_pages_are_404(admin_client, suffix):
    assert admin_client.get(f"/admin/providers/{uuid.uuid4()}{suffix}").status_code == 404
    assert admin_client.get(f"/admin/providers/not-a-uuid{suffix}").status_code == 404


def test_malformed_key_ids_are_404(app, admin_client):
    pid = service_create(app, "openai")
    assert admin_client.get(f"/admin/providers/{pid}/keys/nope/delete").status_code == 404
    response = post_form(admin_client, f"/admin/providers/{pid}/keys/nope/delete", csrf_path=f"/admin/providers/{pid}")
    assert response.status_code == 404


# --- who may see them ------------------------------------------------------------------------


def _pages(pid, key_id):
    return ["/admin/providers", CREATE, f"/admin/providers/{pid}", f"/admin/providers/{pid}/edit",
            f"/admin/providers/{pid}/delete", f"/admin/providers/{pid}/keys/{key_id}/delete"]


def test_members_are_forbidden(app, client, member):
    pid = service_create(app, "openai")
    key_id, _ = service_key(app, pid)
    login(client, member.email)
    for path in _pages(pid, key_id):
        assert client.get(path).status_code == 403, path
    response = post_form(client, f"/admin/providers/{pid}/delete", csrf_path="/settings/tokens")
    assert response.status_code == 403
    response = post_form(client, f"/admin/providers/{pid}/keys", {"api_key": new_key()}, csrf_path="/settings/tokens")
    assert response.status_code == 403
    assert provider_row(app, pid).deleted is False
    assert key_ids(app, pid) == [key_id]


def test_anonymous_visitors_are_sent_to_login(app, client):
    pid = service_create(app, "openai")
    key_id, _ = service_key(app, pid)
    for path in _pages(pid, key_id):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path


def test_every_admin_page_is_free_of_stored_keys(app, admin_client, member):
    pid = service_create(app, "openai", key_policy="user_preferred")
    key_id, key = service_key(app, pid)
    ukey = user_key(app, member, pid)
    for path in _pages(pid, key_id):
        body = text(admin_client.get(path))
        assert key not in body and ukey not in body
        assert key[:-4] not in body and ukey[:-4] not in body


def test_a_migrated_provider_can_be_edited_without_renaming_it(app, admin_client):
    from app.extensions import db
    from app.models import AIProvider

    with app.app_context():
        provider = AIProvider(type="anthropic", name="agents-anthropic")
        db.session.add(provider)
        db.session.commit()
        pid = str(provider.id)
    data = {"name": "agents-anthropic", "display_name": "Anthropic (legacy)", "base_url": "",
            "key_policy": "user_preferred", "enabled": "y"}
    assert post_form(admin_client, f"/admin/providers/{pid}/edit", data).status_code == 303
    assert provider_row(app, pid).display_name == "Anthropic (legacy)"
    response = post_form(admin_client, f"/admin/providers/{pid}/edit", {**data, "name": "agents-other"})
    assert field_error(text(response), "name") == f"Invalid AI provider name. {NAME_DETAIL}"
