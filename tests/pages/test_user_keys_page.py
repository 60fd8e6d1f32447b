"""/settings/keys: one card per provider with its badge and what happens now, a password field
that is never filled in, save (PRG), remove behind a confirmation, and no key ever echoed."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.support import PASSWORD, Api, login, make_token, new_key, post_form
from tests.support.factories import delete_provider, key_rows, make_provider, stored_key, update_provider

PAGE = "/settings/keys"
BADGES = ("Key saved", "Using shared key", "No key", "User keys disabled")


def card(html: str, provider_id: str) -> str:
    """The HTML of one provider's card (empty when the page has none)."""
    match = re.search(rf'<section class="card key-card" id="provider-{provider_id}".*?</section>', html, re.S)
    return match.group(0) if match else ""


def badge(card_html: str) -> str:
    found = re.findall(r'<span class="badge [^"]+">([^<]+)</span>', card_html)
    assert len(found) == 1, card_html
    assert found[0] in BADGES
    return found[0]


def key_inputs(html: str) -> list[str]:
    return re.findall(r"<input[^>]*name=\"api_key\"[^>]*>", html)


def page(client) -> str:
    response = client.get(PAGE)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def save(client, provider_id: str, key: str, follow: bool = False):
    return post_form(client, f"{PAGE}/{provider_id}", {"api_key": key}, csrf_path=PAGE, follow=follow)


@pytest.fixture
def signed_in(client, member):
    login(client, member.email)
    return client


def test_page_needs_sign_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_empty_state_and_settings_navigation(app, signed_in):
    make_provider(app, "central-only", "provider_only", shared_key=True)
    html = page(signed_in)
    assert "No provider accepts your own key" in html
    assert 'href="/settings/keys" aria-current="page"' in html  # the settings sub-navigation
    assert "central-only" not in html
    assert key_inputs(html) == []


def test_each_card_says_whose_key_is_used(app, signed_in):
    saved = make_provider(app, "saved", shared_key=True)
    shared = make_provider(app, "shared", shared_key=True, display_name="Shared Co")
    nothing = make_provider(app, "nothing")
    mine_only = make_provider(app, "mine-only", "user_only", shared_key=True)
    assert save(signed_in, saved, new_key()).status_code == 302

    html = page(signed_in)
    cards = {pid: card(html, pid) for pid in (saved, shared, nothing, mine_only)}
    assert badge(cards[saved]) == "Key saved" and "Your key is used." in cards[saved]
    assert badge(cards[shared]) == "Using shared key"
    assert "The shared key is used; add yours to use your own." in cards[shared]
    assert "Shared Co" in cards[shared]
    assert badge(cards[nothing]) == "No key"
    assert "No key is available: add yours to use this provider." in cards[nothing]
    assert badge(cards[mine_only]) == "No key"  # a shared key exists, but this policy does not use it
    assert "This provider needs your own key: add yours to use it." in cards[mine_only]
    for pid, html_card in cards.items():
        assert len(key_inputs(html_card)) == 1, pid
    assert f'/settings/keys/{saved}/remove' in cards[saved]
    assert f'/settings/keys/{shared}/remove' not in cards[shared]


def test_cards_when_user_keys_are_turned_off(app, signed_in):
    with_shared = make_provider(app, "with-shared", shared_key=True)
    without = make_provider(app, "without")
    assert save(signed_in, with_shared, new_key()).status_code == 302
    app.config["ALLOW_BYOK"] = False

    html = page(signed_in)
    assert "User keys are turned off for this Switchboard" in html
    first, second = card(html, with_shared), card(html, without)
    assert badge(first) == badge(second) == "User keys disabled"
    assert "User keys are turned off; the shared key is used." in first
    assert "Your saved key is not used; you can remove it." in first
    assert f"/settings/keys/{with_shared}/remove" in first
    assert "this provider cannot be used right now" in second
    assert key_inputs(html) == []  # nothing to save while BYOK is off


def test_key_kept_after_policy_or_provider_changes_can_still_be_removed(app, signed_in):
    central = make_provider(app, "went-central")
    paused = make_provider(app, "paused")
    for pid in (central, paused):
        assert save(signed_in, pid, new_key()).status_code == 302
    update_provider(app, central, key_policy="provider_only")
    update_provider(app, paused, enabled=False)

    html = page(signed_in)
    assert badge(card(html, central)) == "User keys disabled"
    assert "Your saved key is not used; you can remove it." in card(html, central)
    assert badge(card(html, paused)) == "Key saved"
    assert "turned off by your administrator; your key is kept but not used" in card(html, paused)
    for pid in (central, paused):
        assert key_inputs(card(html, pid)) == []
        assert f"/settings/keys/{pid}/remove" in card(html, pid)


def test_saving_redirects_with_a_flash_and_the_field_stays_empty(app, signed_in, member):
    pid = make_provider(app, "prg", display_name="PRG AI")
    key = new_key()
    response = save(signed_in, pid, f"  {key}  ")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/settings/keys#provider-{pid}")
    assert stored_key(app, member, pid)[4] == key

    html = page(signed_in)
    assert f"Your key for PRG AI was saved (...{key[-4:]})." in html
    this = card(html, pid)
    assert badge(this) == "Key saved"
    assert f"...{key[-4:]}" in this
    assert 'type="submit" class="btn btn-primary">Replace key' in this
    (field,) = key_inputs(this)
    assert 'type="password"' in field and 'value=""' in field and 'autocomplete="off"' in field


def test_saving_again_replaces_the_key_in_place(app, signed_in, member):
    pid = make_provider(app, "replace")
    first, second = new_key("first"), new_key("second")
    save(signed_in, pid, first)
    row_id, created, *_ = stored_key(app, member, pid)
    save(signed_in, pid, second)
    new_id, new_created, _, _, plaintext = stored_key(app, member, pid)
    assert (new_id, new_created, plaintext) == (row_id, created, second)
    assert f"...{second[-4:]}" in card(page(signed_in), pid)
    assert key_rows(app, user=member) == 1


@pytest.mark.parametrize("value, message", [
    ("", "API key is required."),
    ("   ", "API key is required."),
    ("big", "API key too large. API key exceeds maximum size of 10240 bytes"),
])
def test_key_errors_are_shown_next_to_the_field(app, signed_in, member, value, message):
    pid = make_provider(app, "checked")
    other = make_provider(app, "other")
    if value == "big":
        value = new_key("big") + "x" * 10240
    response = save(signed_in, pid, value)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    this = card(html, pid)
    assert f'<p class="field-error" id="api-key-{pid}-error">{message}</p>' in this
    assert 'aria-invalid="true"' in this
    assert "field-error" not in card(html, other)
    if value.strip():
        assert value not in html and value[:40] not in html
    for field in key_inputs(html):
        assert 'value=""' in field
    assert key_rows(app, user=member) == 0


def test_provider_errors_are_shown_on_the_page(app, signed_in, member):
    paused = make_provider(app, "paused-now")
    central = make_provider(app, "central", "provider_only")
    gone = make_provider(app, "gone")
    page(signed_in)  # the user opened the page, then the administrator changed things
    update_provider(app, paused, enabled=False)
    delete_provider(app, gone)

    for pid, status, message in [
        (paused, 400, "AI provider is disabled."),
        (central, 400, "AI provider does not allow user API keys."),
        (gone, 404, "AI provider not found."),
        (str(uuid.uuid4()), 404, "AI provider not found."),
    ]:
        key = new_key()
        response = save(signed_in, pid, key)
        assert response.status_code == status, message
        html = response.get_data(as_text=True)
        assert message in html
        assert key not in html
    assert key_rows(app, user=member) == 0


def test_byok_off_refuses_saving_with_the_message_on_the_card(app, signed_in, member):
    pid = make_provider(app, "byok-off")
    app.config["ALLOW_BYOK"] = False
    response = save(signed_in, pid, new_key())
    assert response.status_code == 403
    assert '<p class="field-error" role="alert">BYOK is disabled.</p>' in card(response.get_data(as_text=True), pid)
    assert key_rows(app, user=member) == 0


def test_malformed_ids_are_404(signed_in):
    assert save(signed_in, "not-a-uuid", new_key()).status_code == 404
    assert signed_in.get(f"{PAGE}/not-a-uuid/remove").status_code == 404
    assert post_form(signed_in, f"{PAGE}/not-a-uuid/remove", csrf_path=PAGE).status_code == 404


@pytest.mark.parametrize("policy, shared, after", [
    ("user_preferred", True, "The shared key of your organisation will be used instead."),
    ("user_preferred", False, "There is no shared key: you will not be able to use this provider until you add a key again."),
    ("user_only", True, "This provider needs your own key: you will not be able to use it until you add one again."),
])
def test_remove_asks_first_and_says_what_happens_next(app, signed_in, member, policy, shared, after):
    pid = make_provider(app, "removable", policy, shared_key=shared, display_name="Removable AI")
    key = new_key()
    save(signed_in, pid, key)
    assert f'href="/settings/keys/{pid}/remove"' in page(signed_in)

    confirm = signed_in.get(f"{PAGE}/{pid}/remove")
    assert confirm.status_code == 200
    html = confirm.get_data(as_text=True)
    assert "Remove your key for Removable AI?" in html
    assert f"...{key[-4:]}" in html and key not in html
    assert after in html
    assert f'action="/settings/keys/{pid}/remove"' in html
    assert key_rows(app, user=member) == 1  # asking removes nothing

    response = post_form(signed_in, f"{PAGE}/{pid}/remove", csrf_path=f"{PAGE}/{pid}/remove")
    assert response.status_code == 302 and response.headers["Location"].endswith(PAGE)
    assert key_rows(app, user=member) == 0
    html = page(signed_in)
    assert f"Your key for Removable AI was removed. {after}" in html
    assert badge(card(html, pid)) == ("Using shared key" if policy == "user_preferred" and shared else "No key")


def test_remove_works_while_user_keys_are_off(app, signed_in, member):
    pid = make_provider(app, "off-remove", shared_key=True)
    save(signed_in, pid, new_key())
    app.config["ALLOW_BYOK"] = False
    confirm = signed_in.get(f"{PAGE}/{pid}/remove").get_data(as_text=True)
    assert "Your key is not used at the moment, so nothing changes for you right now." in confirm
    assert post_form(signed_in, f"{PAGE}/{pid}/remove", csrf_path=PAGE).status_code == 302
    assert key_rows(app, user=member) == 0


def test_remove_needs_the_csrf_token(app, signed_in, member):
    pid = make_provider(app, "csrf")
    save(signed_in, pid, new_key())
    assert signed_in.post(f"{PAGE}/{pid}/remove").status_code == 400
    assert signed_in.post(f"{PAGE}/{pid}", data={"api_key": new_key()}).status_code == 400
    assert key_rows(app, user=member) == 1


def test_remove_without_a_key_changes_nothing(app, signed_in):
    pid = make_provider(app, "nothing-saved")
    response = signed_in.get(f"{PAGE}/{pid}/remove", follow_redirects=True)
    assert "You have no key saved for nothing-saved." in response.get_data(as_text=True)


def test_another_member_can_neither_see_nor_remove_my_key(app, client, member, member_b):
    pid = make_provider(app, "mine")
    login(client, member.email)
    key = new_key()
    save(client, pid, key)

    other = app.test_client()
    login(other, member_b.email)
    html = page(other)
    assert badge(card(html, pid)) == "No key"
    assert f"...{key[-4:]}" not in html
    assert f"/settings/keys/{pid}/remove" not in html
    response = other.get(f"{PAGE}/{pid}/remove", follow_redirects=True)
    assert "You have no key saved for mine." in response.get_data(as_text=True)
    assert post_form(other, f"{PAGE}/{pid}/remove", csrf_path=PAGE).status_code == 302
    assert stored_key(app, member, pid)[4] == key
    assert key_rows(app, user=member_b) == 0


def test_a_key_saved_on_the_page_never_appears_in_any_page(app, client, admin, member, caplog):
    pid = make_provider(app, "canary-provider", shared_key=True)
    user_only = make_provider(app, "canary-user-only", "user_only")
    canary, refused = new_key("canary"), new_key("refused") + "z" * 10240
    login(client, member.email)

    served: dict[str, str] = {}
    saved = save(client, pid, canary, follow=False)
    assert saved.status_code == 302
    served["save response"] = saved.get_data(as_text=True)
    served["page after save"] = client.get(saved.headers["Location"]).get_data(as_text=True)
    failed = save(client, user_only, refused)
    assert failed.status_code == 400
    served["failed save"] = failed.get_data(as_text=True)
    for path in (PAGE, f"{PAGE}/{pid}/remove", "/", "/models", "/settings/tokens", "/settings/password"):
        served[path] = client.get(path).get_data(as_text=True)
    api = Api(app.test_client(), make_token(app, member))
    served["api listing"] = api.get("/user-ai-provider-keys").get_data(as_text=True)

    admin_client = app.test_client()
    login(admin_client, admin.email, PASSWORD)
    for path in ("/admin/providers", f"/admin/providers/{pid}", f"/admin/providers/{pid}/edit",
                 f"/admin/providers/{pid}/delete", "/admin/audit", "/admin/audit?action=user_key.",
                 "/admin/users", "/"):
        served["admin " + path] = admin_client.get(path).get_data(as_text=True)
    admin_api = Api(app.test_client(), make_token(app, admin))
    for path in ("/ai-providers", f"/ai-providers/{pid}", f"/ai-providers/{pid}/keys"):
        served["admin api " + path] = admin_api.get(path).get_data(as_text=True)

    assert "Key saved" in served["page after save"]
    assert f"...{canary[-4:]}" in served["page after save"]
    for where, body in served.items():
        for secret in (canary, canary[:-4], refused[:40]):
            assert secret not in body, f"key material in {where}"
    assert canary not in caplog.text and refused[:40] not in caplog.text


def test_the_test_button_follows_the_key_testing_service(app, signed_in, monkeypatch):
    """Whether a key can be tested is the key-testing service's rule, not the page's: a type it
    cannot test (Bedrock today) gets no button, whatever the type is."""
    from app.services import key_testing

    openai = make_provider(app, "openai-like", type="openai")
    bedrock = make_provider(app, "bedrock-like", type="bedrock")
    for pid in (openai, bedrock):
        assert save(signed_in, pid, new_key()).status_code == 302
    html = page(signed_in)
    assert ">Test my key</button>" in card(html, openai)
    assert ">Test my key</button>" not in card(html, bedrock)

    monkeypatch.delitem(key_testing._APIS, "openai")  # say the service cannot test OpenAI keys
    assert ">Test my key</button>" not in card(page(signed_in), openai)
