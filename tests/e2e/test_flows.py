"""What people do with Switchboard, in a real browser against the real server.

Every tab is watched (see conftest.py): a console error, an uncaught page error, a CSP violation,
or a key of `new_key()` in any response, page or server log line fails the test. Every page a tab
arrives at is checked for destructive controls that act without a confirmation page first.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.e2e.seed import ADMIN, MEMBER, Api, create_token, create_user, set_up_admin
from tests.support import API, PASSWORD, new_key
from tests.support.stub_provider import StubProvider

pytestmark = [pytest.mark.browser, pytest.mark.postgres_only]


def hint(key: str) -> str:
    return "..." + key[-4:]


def badge(tab, within) -> str:
    return within.locator(".badge").first.inner_text()


def test_first_run_setup_creates_the_administrator_then_disappears(web):
    tab = web.tab()
    tab.goto("/")
    assert tab.path == "/setup"
    assert tab.heading() == "Welcome to Switchboard"
    tab.fill("Email", ADMIN)
    tab.fill("Name", "Ada Admin")
    tab.fill("Password", PASSWORD)
    tab.fill("Repeat password", PASSWORD + "!")
    tab.press("Create administrator", status=400)
    assert tab.field_error("Repeat password") == "The passwords do not match."
    assert tab.value("Email") == ADMIN and tab.value("Name") == "Ada Admin"
    assert tab.value("Password") == ""  # passwords are never sent back
    tab.fill("Password", PASSWORD)
    tab.fill("Repeat password", PASSWORD)
    tab.press("Create administrator")
    assert tab.path == "/login"
    assert "Administrator account created." in tab.flash()
    tab.sign_in(ADMIN)
    assert tab.heading() == "Hello, Ada Admin"
    nav = tab.page.get_by_role("navigation", name="Main")
    for name in ("Models", "Settings", "Providers", "Model configs", "Legacy", "Groups", "Users", "Audit log"):
        assert nav.get_by_role("link", name=name, exact=True).is_visible(), name
    tab.goto("/setup", status=404)
    tab.press("Sign out")
    assert tab.path == "/login" and "You have been signed out." in tab.flash()
    tab.goto("/admin/providers")
    assert tab.path == "/login"


def test_provider_keys_models_and_a_members_own_key(web):
    admin = set_up_admin(web)

    # The admin registers a provider that prefers users' own keys...
    admin.follow("Providers")
    assert "No AI providers yet" in admin.text()
    admin.follow("Add your first provider")
    admin.choose("Type", "OpenAI")
    admin.fill("Name", "openai-main")
    admin.fill("Display name", "OpenAI Main")
    admin.choose("Key policy", "User key preferred")
    admin.press("Create provider")
    assert "Provider openai-main created." in admin.flash()
    assert admin.heading().startswith("OpenAI Main")

    # ...stores two keys, sees only their hints, and deletes the spare after a confirmation page.
    shared, spare = new_key("shared"), new_key("spare")
    for key in (shared, spare):
        admin.fill("API key", key)
        admin.press("Save key")
        assert f"Key {hint(key)} saved." in admin.flash()
        assert admin.value("API key") == ""
    keys = admin.page.locator("#keys tbody tr")
    assert [r.locator("code").inner_text() for r in keys.all()] == [hint(shared), hint(spare)]
    admin.follow("Delete…", within=admin.row(hint(spare)))
    assert admin.heading() == f"Delete key {hint(spare)}?"
    admin.follow("Cancel")
    assert keys.count() == 2  # looking at the confirmation deleted nothing
    admin.follow("Delete…", within=admin.row(hint(spare)))
    admin.press("Delete key")
    assert "Key deleted." in admin.flash()
    assert [r.locator("code").inner_text() for r in keys.all()] == [hint(shared)]

    # Two models; the first is the default until the admin switches it.
    admin.follow("Model configs")
    admin.follow("Add your first model")
    for model, name in [("gpt-4.1", "GPT-4.1"), ("gpt-4o-mini", "GPT-4o mini")]:
        admin.choose("AI provider", "OpenAI Main · OpenAI")
        admin.fill("Model", model)
        admin.fill("Display name", name)
        admin.press("Add model")
        assert f"Model {model} added." in admin.flash()
        if model == "gpt-4.1":
            assert "It is the default model." in admin.flash()
            admin.follow("Add model")
    assert admin.row("GPT-4.1").get_by_text("Default", exact=True).is_visible()
    assert admin.row("GPT-4o mini").get_by_text("Default", exact=True).count() == 0
    admin.press("Make default", within=admin.row("GPT-4o mini"))
    assert "GPT-4o mini is now the default model." in admin.flash()
    assert admin.row("GPT-4o mini").get_by_text("Default", exact=True).is_visible()
    assert admin.row("GPT-4.1").get_by_text("Default", exact=True).count() == 0
    create_user(admin, MEMBER, "Mel Member")

    # A member adds a key of their own: the card says so and /models says whose key serves them.
    member = web.tab()
    member.sign_in(MEMBER)
    assert member.page.get_by_role("link", name="Providers").count() == 0
    member.follow("Settings")
    member.follow("My keys")
    card = member.card("OpenAI Main")
    assert badge(member, card) == "Using shared key"
    own = new_key("member")
    member.fill("API key", own, within=card)
    member.press("Save key", within=card)
    assert "Your key for OpenAI Main was saved" in member.flash()
    assert badge(member, card) == "Key saved"
    assert hint(own) in card.inner_text()
    assert member.page.get_by_label("API key", exact=True).input_value() == ""
    member.follow("Models")
    for model in ("GPT-4.1", "GPT-4o mini"):
        assert member.row(model).get_by_text("Your key", exact=True).is_visible()

    # Removing it asks first, says what happens next, and the shared key takes over.
    member.follow("Settings")
    member.follow("My keys")
    member.follow("Remove…", within=member.card("OpenAI Main"))
    assert member.heading() == "Remove your key for OpenAI Main?"
    assert "The shared key of your organisation will be used instead." in member.text()
    member.press("Remove key")
    assert "Your key for OpenAI Main was removed." in member.flash()
    assert badge(member, member.card("OpenAI Main")) == "Using shared key"
    member.follow("Models")
    assert member.row("GPT-4.1").get_by_text("Shared key", exact=True).is_visible()

    # The admin deletes the provider: the confirmation says what goes with it, and changes nothing.
    admin.follow("Providers")
    admin.follow("Keys & details", within=admin.row("openai-main"))
    admin.follow("Delete provider…")
    assert admin.heading() == "Delete OpenAI Main?"
    confirmation = admin.text()
    assert "1 shared API key" in confirmation and "2 model configs" in confirmation
    member.goto("/models")
    assert member.row("GPT-4.1")
    admin.press("Delete provider")
    assert "Provider openai-main deleted" in admin.flash()
    assert "No AI providers yet" in admin.text()

    # The member's pages follow at once.
    member.goto("/models")
    assert "No model is ready for you yet" in member.text()
    assert "GPT-4" not in member.text()
    member.goto("/settings/keys")
    assert "No provider accepts your own key" in member.text()


def test_a_model_open_only_to_a_group(web, server):
    admin = set_up_admin(web)
    api = Api(server.url, create_token(admin, "Provisioning script"))
    provider = api.ok("POST", "/ai-providers", {"type": "anthropic", "name": "anthropic", "display_name": "Anthropic"})
    api.ok("POST", f"/ai-providers/{provider['id']}/keys", {"api_key": new_key("group-flow")})
    for model, name in [("claude-sonnet-4", "Claude Sonnet 4"), ("claude-opus-4", "Claude Opus 4")]:
        api.ok("POST", "/model-configs", {"ai_provider_id": provider["id"], "model": model, "display_name": name})
    create_user(admin, MEMBER, "Mel Member")

    # The admin makes a group...
    admin.follow("Groups")
    assert "No groups yet" in admin.text()
    admin.follow("Add your first group")
    admin.fill("Name", "research")
    admin.fill("Display name", "Research")
    admin.press("Create group")
    assert "Group research created." in admin.flash()
    assert "No members yet" in admin.text()

    # ...and opens the expensive model only to its members.
    admin.follow("Model configs")
    assert "Everyone" in admin.row("Claude Opus 4").inner_text()
    admin.follow("Edit", within=admin.row("Claude Opus 4"))
    admin.tick("Only members of")
    admin.tick("Research")
    admin.press("Save changes")
    assert "Changes saved." in admin.flash()
    assert "Members of Research" in admin.row("Claude Opus 4").inner_text()

    # A member outside the group no longer sees it...
    member = web.tab()
    member.sign_in(MEMBER)
    member.follow("Models")
    assert member.row("Claude Sonnet 4").get_by_text("Shared key", exact=True).is_visible()
    assert "Claude Opus 4" not in member.text()

    # ...until the admin adds them by email: then they do.
    admin.follow("Groups")
    admin.follow("Members", within=admin.row("research"))
    admin.fill("Email", "nobody@example.com")
    admin.press("Add member", status=400)
    assert admin.field_error("Email") == "No active user has this email."
    admin.fill("Email", MEMBER)
    admin.press("Add member")
    assert f"{MEMBER} is a member of research." in admin.flash()
    assert admin.row(MEMBER).get_by_text("Manual", exact=True).is_visible()
    member.goto("/models")
    assert member.row("Claude Opus 4").get_by_text("Shared key", exact=True).is_visible()

    # Removing them asks first; the confirmation alone changes nothing.
    admin.follow("Remove…", within=admin.row(MEMBER))
    assert admin.heading() == "Remove Mel Member from Research?"
    member.goto("/models")
    assert member.row("Claude Opus 4")
    admin.press("Remove member")
    assert "Removed from research." in admin.flash()
    member.goto("/models")
    assert "Claude Opus 4" not in member.text()

    # Deleting the group names the model it leaves open to no one, which stays closed.
    admin.follow("Delete group…")
    assert admin.heading() == "Delete Research?"
    assert "1 model will be open to no one" in admin.text()
    assert "Claude Opus 4" in admin.page.locator(".closed-configs").inner_text()
    admin.press("Delete group")
    assert "Group research deleted. 1 model open to it alone is now open to no one." in admin.flash()
    admin.follow("Model configs")
    assert "No one" in admin.row("Claude Opus 4").inner_text()
    member.goto("/models")
    assert "Claude Opus 4" not in member.text()


def _me(base_url: str, token: str) -> int:
    request = urllib.request.Request(base_url + API + "/me", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["email"] == ADMIN
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_token_is_shown_once_and_revoked_after_confirmation(web, server):
    admin = set_up_admin(web)
    admin.goto("/settings/tokens")
    assert "No tokens yet" in admin.text()
    token = create_token(admin, "Laptop script")
    assert "shown only this once" in admin.text()
    assert _me(server.url, token) == 200
    admin.goto("/settings/tokens")
    assert token not in admin.page.content()
    row = admin.row("Laptop script")
    assert row.locator("code").inner_text().rstrip("…") == token[: len(row.locator("code").inner_text()) - 1]
    admin.follow("Revoke…", within=row)
    assert admin.heading() == "Revoke “Laptop script”?"
    assert _me(server.url, token) == 200  # the confirmation page revokes nothing
    admin.press("Revoke token")
    assert "Token “Laptop script” was revoked." in admin.flash()
    assert "No tokens yet" in admin.text()
    assert _me(server.url, token) == 401


def test_a_bad_value_is_shown_next_to_its_field_and_the_rest_is_kept(web):
    admin = set_up_admin(web)
    admin.goto("/admin/providers/new")
    admin.choose("Type", "Anthropic")
    admin.fill("Name", "Claude Team")
    admin.fill("Display name", "Claude for the team")
    admin.fill("Base URL", "https://api.anthropic.com")
    admin.choose("Key policy", "User key required")
    admin.tick("Enabled", False)
    admin.press("Create provider", status=400)
    assert admin.field_error("Name").startswith("Invalid AI provider name.")
    assert admin.page.locator(".field-error").count() == 1
    assert admin.value("Name") == "Claude Team"
    assert admin.value("Display name") == "Claude for the team"
    assert admin.value("Base URL") == "https://api.anthropic.com"
    assert admin.value("Type") == "anthropic"
    assert admin.value("Key policy") == "user_only"
    assert not admin.page.get_by_label("Enabled", exact=True).is_checked()

    admin.fill("Name", "claude-team")
    admin.fill("Base URL", "http://169.254.169.254/latest")
    admin.press("Create provider", status=400)
    assert admin.field_error("Base URL").startswith("Invalid provider base URL.")
    assert admin.value("Name") == "claude-team"
    admin.fill("Base URL", "")
    admin.tick("Enabled")
    admin.press("Create provider")
    assert "Provider claude-team created." in admin.flash()

    # A number out of range on the model form: the error sits by that number, the rest stays.
    admin.goto("/admin/model-configs/new")
    admin.choose("AI provider", "Claude for the team · Anthropic")
    admin.fill("Model", "claude-sonnet-4")
    admin.fill("Display name", "Claude Sonnet 4")
    admin.fill("Compression threshold (%)", "150")
    admin.press("Add model", status=400)
    assert admin.field_error("Compression threshold (%)")
    assert admin.value("Model") == "claude-sonnet-4"
    assert admin.value("Display name") == "Claude Sonnet 4"
    assert admin.value("Compression threshold (%)") == "150"


def test_the_pages_work_without_javascript(web, server):
    set_up_admin(web)
    tab = web.tab(javascript=False)
    tab.sign_in(ADMIN)
    tab.goto("/admin/providers/new")
    tab.choose("Type", "Google")
    tab.fill("Name", "gemini")
    tab.press("Create provider")
    key = new_key("nojs")
    tab.fill("API key", key)
    tab.press("Save key")
    assert f"Key {hint(key)} saved." in tab.flash()
    tab.follow("Delete provider…")
    tab.press("Delete provider")
    assert "Provider gemini deleted" in tab.flash()


def test_models_are_discovered_and_a_key_tested_at_the_provider(web):
    stub = StubProvider().start()  # answers like an OpenAI-compatible server, on 127.0.0.1
    try:
        admin = set_up_admin(web)
        admin.goto("/admin/providers/new")
        admin.choose("Type", "OpenAI-compatible")
        admin.fill("Name", "local-llm")
        admin.fill("Display name", "Local LLM")
        admin.fill("Base URL", stub.url + "/v1")
        admin.choose("Key policy", "User key preferred")
        admin.press("Create provider")
        admin.fill("API key", new_key("stub-shared"))
        admin.press("Save key")

        admin.goto(admin.path + "/discover")
        assert admin.heading() == "Models served by Local LLM"
        assert not stub.hits  # the page alone calls nothing
        admin.press("Discover models")
        admin.press("Create config", within=admin.row("o3-mini"))
        assert "Model config “o3-mini” created on local-llm" in admin.flash()
        assert admin.row("o3-mini").get_by_text("Configured", exact=True).is_visible()
        create_user(admin, MEMBER, "Mel Member")

        member = web.tab()
        member.sign_in(MEMBER)
        member.goto("/settings/keys")
        own = new_key("stub-member")
        member.fill("API key", own, within=member.card("Local LLM"))
        member.press("Save key", within=member.card("Local LLM"))
        member.press("Test my key", within=member.card("Local LLM"))
        assert member.flash().startswith("Your key for Local LLM:")
        assert member.page.locator(".flash-success").count() == 1
        assert any(own in hit.headers.get("authorization", "") for hit in stub.hits)  # it was this key
        member.goto("/models")
        assert member.row("o3-mini").get_by_text("Your key", exact=True).is_visible()
    finally:
        stub.stop()
