"""Admin model config pages and the /models page, driven like a browser (forms + CSRF)."""

from __future__ import annotations

import html
import re
import uuid

import pytest

from tests.support import get_csrf, new_key, post_form


def make_provider(app, name="openai-main", type="openai", key_policy="provider_only", keys=(), enabled=True,
                  display_name=None):
    from app.services import provider_keys, providers
    from app.services.base import Actor

    with app.app_context():
        actor = Actor.system("test")
        provider = providers.create_provider(actor, type=type, name=name, key_policy=key_policy,
                                             display_name=display_name)
        for key in keys:
            provider_keys.add_key(actor, provider.id, key)
        if not enabled:
            providers.update_provider(actor, provider.id, {"enabled": False})
        return provider.id


def make_config(app, provider_id, model="gpt-4o", **fields):
    from app.services import model_configs
    from app.services.base import Actor

    with app.app_context():
        return model_configs.create_config(Actor.system("test"), ai_provider_id=provider_id, model=model, **fields).id


def get_config(app, config_id):
    from app.services import model_configs

    with app.app_context():
        config = model_configs.get_config(config_id)
        return {c: getattr(config, c) for c in ("model", "display_name", "enabled", "is_default", "context_limit",
                                                "compression_threshold", "options")}


def field_error(page: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="{field}-error">(.*?)</p>', page, re.S)
    return html.unescape(match.group(1)) if match else ""


def input_value(page: str, field: str) -> str:
    match = re.search(rf'<input[^>]*id="{field}"[^>]*value="([^"]*)"', page) or re.search(
        rf'<input[^>]*value="([^"]*)"[^>]*id="{field}"', page)
    return html.unescape(match.group(1)) if match else ""


def textarea_value(page: str, field: str) -> str:
    match = re.search(rf'<textarea[^>]*id="{field}"[^>]*>(.*?)</textarea>', page, re.S)
    return html.unescape(match.group(1)).strip() if match else ""


FORM = {"model": "gpt-4o", "display_name": "GPT-4o", "context_limit": "64000", "compression_threshold": "80",
        "options": '{"temperature": 0.2}', "enabled": "y"}


# --- admin pages -------------------------------------------------------------------------------


def test_members_and_visitors_cannot_open_the_admin_pages(app, member_client, admin_client):
    pid = make_provider(app)
    cid = make_config(app, pid)
    other = make_config(app, pid, "o3-mini")
    for path in ("/admin/model-configs", "/admin/model-configs/new", f"/admin/model-configs/{cid}/edit",
                 f"/admin/model-configs/{cid}/delete"):
        assert member_client.get(path).status_code == 403
        visitor = app.test_client().get(path)
        assert (visitor.status_code, visitor.headers["Location"]) == (302, f"/login?next={path}")
    # With a valid CSRF token (from a page members may open), so admin_required is what refuses.
    refused = post_form(member_client, f"/admin/model-configs/{other}/default", csrf_path="/models")
    assert refused.status_code == 403
    assert get_config(app, cid)["is_default"] is True
    assert get_config(app, other)["is_default"] is False


def test_list_shows_each_config_with_provider_status_default_and_limit(app, admin_client):
    pid = make_provider(app, display_name="OpenAI EU")
    make_config(app, pid, "gpt-4o", display_name="GPT-4o", context_limit=64000)
    make_config(app, pid, "o3-mini", enabled=False)
    page = admin_client.get("/admin/model-configs").get_data(as_text=True)
    assert "GPT-4o" in page and "gpt-4o" in page and "o3-mini" in page
    assert "OpenAI EU" in page
    assert "Default" in page
    assert "64,000" in page
    assert "Disabled" in page and "Enabled" in page
    assert page.count("Make default") == 1


def test_create_form_lists_only_live_enabled_providers_and_creates(app, admin_client):
    on = make_provider(app, "on-one", display_name="On One")
    make_provider(app, "off-one", display_name="Off One", enabled=False)
    page = admin_client.get("/admin/model-configs/new").get_data(as_text=True)
    assert "On One" in page and "Off One" not in page
    response = post_form(admin_client, "/admin/model-configs/new", {**FORM, "ai_provider_id": str(on)})
    assert response.status_code == 303
    listing = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Model gpt-4o added. It is the default model." in listing
    from app.services import model_configs

    with app.app_context():
        configs, _ = model_configs.list_configs()
        config = configs[0]
        assert (config.model, config.display_name, config.context_limit, config.compression_threshold,
                config.options, config.enabled, config.is_default) == ("gpt-4o", "GPT-4o", 64000, 80,
                                                                       {"temperature": 0.2}, True, True)


def test_create_without_providers_points_to_the_provider_page(admin_client):
    page = admin_client.get("/admin/model-configs/new").get_data(as_text=True)
    assert "No enabled AI provider" in page
    assert "/admin/providers/new" in page


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"context_limit": "0"}, "context_limit", "Must be a whole number between 1 and 2147483647."),
    ({"context_limit": "lots"}, "context_limit", "Not a valid integer value."),
    ({"compression_threshold": "150"}, "compression_threshold", "Must be a whole number from 0 to 100."),
    ({"options": "{not json"}, "options", "Options must be valid JSON."),
    ({"options": "[1, 2]"}, "options", "Options must be a JSON object."),
    ({"model": "  "}, "model", "Enter the provider's model id."),
    ({"ai_provider_id": ""}, "ai_provider_id", "AI provider ID is required."),
])
def test_create_errors_appear_next_to_the_field_and_keep_the_other_values(app, admin_client, changes, field,
                                                                           message):
    pid = make_provider(app)
    response = post_form(admin_client, "/admin/model-configs/new", {**FORM, "ai_provider_id": str(pid), **changes},
                         csrf_path="/admin/model-configs/new")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in field_error(page, field)
    if field != "display_name":
        assert input_value(page, "display_name") == "GPT-4o"
    if field != "options":
        assert textarea_value(page, "options") == '{"temperature": 0.2}'
    from app.services import model_configs

    with app.app_context():
        assert model_configs.list_configs()[1] == 0


def test_create_duplicate_shows_the_conflict_next_to_the_model(app, admin_client):
    pid = make_provider(app)
    make_config(app, pid, "gpt-4o")
    response = post_form(admin_client, "/admin/model-configs/new", {**FORM, "ai_provider_id": str(pid)})
    assert response.status_code == 400
    assert "Chat model config already exists." in field_error(response.get_data(as_text=True), "model")


def test_edit_form_is_filled_in(app, admin_client):
    pid = make_provider(app, display_name="OpenAI EU")
    cid = make_config(app, pid, "gpt-4o", display_name="GPT-4o", options={"top_p": 0.5})
    page = admin_client.get(f"/admin/model-configs/{cid}/edit").get_data(as_text=True)
    assert input_value(page, "model") == "gpt-4o"
    assert input_value(page, "display_name") == "GPT-4o"
    assert input_value(page, "context_limit") == "128000"
    assert '"top_p": 0.5' in textarea_value(page, "options")
    assert "OpenAI EU" in page and "cannot be changed" in page
    assert admin_client.get(f"/admin/model-configs/{uuid.uuid4()}/edit").status_code == 404
    assert admin_client.get("/admin/model-configs/nope/edit").status_code == 404


def test_edit_saves_changes(app, admin_client):
    pid = make_provider(app)
    cid = make_config(app, pid, "gpt-4o")
    response = post_form(admin_client, f"/admin/model-configs/{cid}/edit",
                         {"model": "gpt-4.1", "display_name": "Four One", "context_limit": "1000",
                          "compression_threshold": "10", "options": ""})
    assert response.status_code == 303
    assert get_config(app, cid) == {"model": "gpt-4.1", "display_name": "Four One", "enabled": False,
                                    "is_default": True, "context_limit": 1000, "compression_threshold": 10,
                                    "options": {}}


def test_edit_with_a_bad_value_shows_the_error_next_to_the_field_and_keeps_other_values(app, admin_client):
    pid = make_provider(app)
    cid = make_config(app, pid, "gpt-4o", display_name="Old name")
    before = get_config(app, cid)
    response = post_form(admin_client, f"/admin/model-configs/{cid}/edit",
                         {**FORM, "display_name": "New name", "compression_threshold": "-3"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Must be a whole number from 0 to 100." in field_error(page, "compression_threshold")
    assert input_value(page, "display_name") == "New name"
    assert input_value(page, "compression_threshold") == "-3"
    assert textarea_value(page, "options") == '{"temperature": 0.2}'
    assert get_config(app, cid) == before


def test_edit_to_a_taken_model_shows_the_conflict(app, admin_client):
    pid = make_provider(app)
    make_config(app, pid, "a")
    cid = make_config(app, pid, "b")
    response = post_form(admin_client, f"/admin/model-configs/{cid}/edit", {**FORM, "model": "a"})
    assert response.status_code == 400
    assert "Chat model config already exists." in field_error(response.get_data(as_text=True), "model")


def test_set_default_button_moves_the_default(app, admin_client):
    pid = make_provider(app)
    first = make_config(app, pid, "a")
    second = make_config(app, pid, "b")
    response = post_form(admin_client, f"/admin/model-configs/{second}/default", csrf_path="/admin/model-configs")
    assert response.status_code == 303
    assert "is now the default model" in admin_client.get("/admin/model-configs").get_data(as_text=True)
    assert get_config(app, second)["is_default"] and not get_config(app, first)["is_default"]
    # Without the CSRF token nothing happens.
    assert admin_client.post(f"/admin/model-configs/{first}/default").status_code == 400
    assert get_config(app, second)["is_default"]
    assert admin_client.post(f"/admin/model-configs/{uuid.uuid4()}/default",
                             data={"csrf_token": get_csrf(admin_client, "/admin/model-configs")}).status_code == 404


def test_delete_asks_for_confirmation_then_deletes_and_promotes(app, admin_client):
    pid = make_provider(app)
    first = make_config(app, pid, "a")
    second = make_config(app, pid, "b")
    page = admin_client.get(f"/admin/model-configs/{first}/delete").get_data(as_text=True)
    assert "Delete a?" in page and "another model becomes the default" in page
    assert get_config(app, first)["is_default"]  # GET changed nothing
    assert admin_client.post(f"/admin/model-configs/{first}/delete").status_code == 400  # no CSRF
    response = post_form(admin_client, f"/admin/model-configs/{first}/delete")
    assert response.status_code == 303
    assert "Model config deleted." in admin_client.get("/admin/model-configs").get_data(as_text=True)
    assert get_config(app, second)["is_default"]
    assert admin_client.get(f"/admin/model-configs/{first}/delete").status_code == 404


def test_deleting_the_default_on_the_page_promotes_a_model_people_can_use(app, admin_client):
    off = make_provider(app, "switched-off")
    on = make_provider(app, "on", type="anthropic")
    default = make_config(app, on, "default-model", display_name="Default Model")
    make_config(app, off, "older", display_name="Older On A Disabled Provider")
    make_config(app, on, "newer", display_name="Newer Usable")
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        providers.update_provider(Actor.system("test"), off, {"enabled": False})
    response = post_form(admin_client, f"/admin/model-configs/{default}/delete", follow=True)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Model config deleted." in page
    # The list shows the default first, with its badge: the usable one, not the older one.
    first_row = page.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert "Newer Usable" in first_row and "Default" in first_row


# --- /models -----------------------------------------------------------------------------------


def test_models_page_says_whose_key_serves_each_model_and_why_others_do_not(app, member, member_client):
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services import secrets

    shared_key, own_key = new_key("shared"), new_key("own")
    shared = make_provider(app, "shared", keys=[shared_key], display_name="Team OpenAI")
    byok = make_provider(app, "byok", type="anthropic", key_policy="user_only", display_name="Anthropic")
    needs_key = make_provider(app, "needs", type="google", key_policy="user_only", display_name="Google AI")
    no_key = make_provider(app, "nokey", type="openrouter", display_name="OpenRouter")
    make_config(app, shared, "gpt-4o", display_name="GPT-4o")
    make_config(app, byok, "claude", display_name="Claude")
    make_config(app, needs_key, "gemini", display_name="Gemini")
    make_config(app, no_key, "router-model")
    make_config(app, shared, "hidden-model", enabled=False)
    with app.app_context():
        row = UserAIProviderKey(id=uuid.uuid4(), user_id=member.id, ai_provider_id=byok)
        secrets.seal(row, own_key)
        db.session.add(row)
        db.session.commit()

    response = member_client.get("/models")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    ready = page.split("Not available to you yet")[0]
    assert re.search(r"GPT-4o.*?Team OpenAI.*?Shared key", ready, re.S)
    assert re.search(r"Claude.*?Anthropic.*?Your key", ready, re.S)
    blocked = page.split("Not available to you yet")[1]
    assert "Add your own Google AI key in Settings → My keys to use this model." in html.unescape(blocked)
    assert "No shared OpenRouter key is set up yet. Ask an administrator to add one." in blocked
    assert "hidden-model" not in page
    assert shared_key not in page and own_key not in page


def test_models_page_with_byok_off_and_nothing_enabled(app, member_client):
    pid = make_provider(app, "byok", key_policy="user_only", display_name="OpenAI")
    assert "Your administrator has not enabled any model yet." in member_client.get("/models").get_data(as_text=True)
    make_config(app, pid, "gpt-4o")
    app.config["ALLOW_BYOK"] = False
    page = member_client.get("/models").get_data(as_text=True)
    assert "This model needs your own OpenAI key, but user keys are turned off on this server." in page


def test_models_page_needs_sign_in(app):
    response = app.test_client().get("/models")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]
