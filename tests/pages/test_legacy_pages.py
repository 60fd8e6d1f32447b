"""Admin pages for legacy providers and their migration, driven the way a browser does."""

from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa

from tests.support import login, new_key, post_form

LIST = "/admin/legacy-providers"
NEW = "/admin/legacy-providers/new"
MIGRATE = "/admin/legacy-providers/migrate"


@pytest.fixture
def browser(app, admin):
    client = app.test_client()
    login(client, admin.email)
    return client


def text(response) -> str:
    return response.get_data(as_text=True)


def field_error(html: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', html)
    return match.group(1) if match else ""


def create(browser, **fields):
    data = {"provider": "openai", "api_key": new_key("central"), "enabled": "y", "central_api_key_enabled": "y",
            **fields}
    data = {k: v for k, v in data.items() if v is not None}
    response = post_form(browser, NEW, data)
    assert response.status_code == 303, text(response)
    return response


def legacy_rows(app):
    from app.extensions import db
    from app.models import ChatProvider

    with app.app_context():
        rows = db.session.execute(sa.select(ChatProvider).order_by(ChatProvider.provider)).scalars().all()
        db.session.expunge_all()
        return rows


def test_pages_are_for_admins(app, member, client):
    for path in (LIST, NEW, MIGRATE, f"/admin/legacy-providers/{uuid.uuid4()}/edit"):
        assert client.get(path).status_code == 302  # to the login page
    login(client, member.email)
    for path in (LIST, NEW, MIGRATE):
        assert client.get(path).status_code == 403


def test_empty_list(browser):
    page = text(browser.get(LIST))
    assert "No legacy providers" in page
    assert "Migrate to AI providers" not in page


def test_create_then_list_shows_flags_in_words_and_only_the_hint(app, browser):
    key = new_key("central")
    response = create(browser, display_name="Company OpenAI", api_key=key, allow_user_api_key="y",
                      allow_central_api_key_fallback="y")
    assert response.headers["Location"].endswith(LIST)
    page = text(browser.get(LIST))
    assert "Legacy provider Company OpenAI created." in page
    assert "Company OpenAI" in page
    assert "User keys, falling back to the central key" in page
    assert "Becomes: User key preferred" in page
    assert "..." + key[-4:] in page
    assert key not in page
    assert "Not migrated" in page
    create(browser, provider="bedrock", api_key="", central_api_key_enabled="y")
    page = text(browser.get(LIST))
    assert "AWS Bedrock" in page and "Central key only" in page


def test_create_errors_are_shown_next_to_their_fields(app, browser):
    no_key = post_form(browser, NEW, {"provider": "openai", "central_api_key_enabled": "y", "api_key": ""})
    assert no_key.status_code == 400
    assert field_error(text(no_key), "api_key") == "API key is required when central API key is enabled."

    no_source = post_form(browser, NEW, {"provider": "openai", "api_key": new_key()})
    assert no_source.status_code == 400
    assert field_error(text(no_source), "central_api_key_enabled") == (
        "Invalid credential policy. At least one credential source must be enabled: central API key or user API key.")

    fallback = post_form(browser, NEW, {"provider": "openai", "api_key": new_key(), "central_api_key_enabled": "y",
                                        "allow_central_api_key_fallback": "y"})
    assert field_error(text(fallback), "allow_central_api_key_fallback") == (
        "Invalid credential policy. Central API key fallback requires user API key to be enabled.")

    bad_url = post_form(browser, NEW, {"provider": "openai", "api_key": new_key(), "central_api_key_enabled": "y",
                                       "base_url": "ftp://example.com"})
    assert field_error(text(bad_url), "base_url").startswith("Invalid provider base URL.")

    no_type = post_form(browser, NEW, {"provider": "", "api_key": new_key(), "central_api_key_enabled": "y"})
    assert field_error(text(no_type), "provider")

    key = new_key("typed")
    create(browser)
    duplicate = post_form(browser, NEW, {"provider": "openai", "api_key": key, "central_api_key_enabled": "y"})
    assert duplicate.status_code == 400
    assert field_error(text(duplicate), "provider") == "Chat provider already exists."
    assert key not in text(duplicate)  # the key field is never filled back in
    assert len(legacy_rows(app)) == 1


def test_edit_saves_changes_and_never_shows_the_key(app, browser):
    key = new_key("central")
    create(browser, api_key=key, display_name="Before")
    (row,) = legacy_rows(app)
    edit = f"/admin/legacy-providers/{row.id}/edit"
    page = text(browser.get(edit))
    assert "Before" in page and key not in page and "..." + key[-4:] in page

    replacement = new_key("replacement")
    response = post_form(browser, edit, {"display_name": "After", "enabled": "", "central_api_key_enabled": "y",
                                         "allow_user_api_key": "y", "api_key": replacement})
    assert response.status_code == 303
    (row,) = legacy_rows(app)
    assert (row.display_name, row.enabled, row.allow_user_api_key) == ("After", False, True)
    assert row.api_key_hint == "..." + replacement[-4:]

    both = post_form(browser, edit, {"central_api_key_enabled": "y", "api_key": new_key(), "remove_api_key": "y"})
    assert both.status_code == 400
    assert field_error(text(both), "remove_api_key") == "Enter a new key or remove the stored one, not both."

    still_needed = post_form(browser, edit, {"central_api_key_enabled": "y", "allow_user_api_key": "y",
                                             "remove_api_key": "y"})
    assert still_needed.status_code == 400
    assert field_error(text(still_needed), "api_key") == "API key is required when central API key is enabled."

    removed = post_form(browser, edit, {"allow_user_api_key": "y", "remove_api_key": "y"})
    assert removed.status_code == 303
    (row,) = legacy_rows(app)
    assert row.api_key_ciphertext is None and not row.central_api_key_enabled
    assert browser.get(f"/admin/legacy-providers/{uuid.uuid4()}/edit").status_code == 404
    assert browser.get("/admin/legacy-providers/nope/edit").status_code == 404


def test_delete_asks_first_and_says_what_goes(app, browser, member):
    from app.services import legacy
    from app.services.base import Actor

    create(browser, allow_user_api_key="y")
    (row,) = legacy_rows(app)
    with app.app_context():
        legacy.set_user_key(Actor.for_user(member), row.id, new_key("user"))
    path = f"/admin/legacy-providers/{row.id}/delete"
    page = text(browser.get(path))
    assert "Delete legacy provider OpenAI?" in page
    assert "<strong>1</strong> user key that users saved" in page
    assert legacy_rows(app)  # GET changed nothing

    assert browser.post(path, data={}).status_code == 400  # no CSRF token
    assert legacy_rows(app)
    response = post_form(browser, path, csrf_path=path)
    assert response.status_code == 303
    assert legacy_rows(app) == []
    assert "Legacy provider OpenAI deleted, with 1 user key." in text(browser.get(LIST))
    assert browser.get(path).status_code == 404


def test_migrate_shows_a_dry_run_then_migrates_on_post(app, browser, member):
    from app.models import AIProvider

    create(browser)
    create(browser, provider="google", central_api_key_enabled="", allow_user_api_key="y", api_key="")
    page = text(browser.get(MIGRATE))
    assert "Would migrate 2 legacy providers: would copy 1 provider key, 0 user keys, 0 model configs." in page
    assert "agents-google" in page and "User key required" in page
    assert "Migrate 2 providers" in page

    from app.extensions import db

    with app.app_context():
        assert db.session.execute(sa.select(AIProvider)).first() is None  # the dry run wrote nothing

    response = post_form(browser, MIGRATE)
    assert response.status_code == 303
    listing = text(browser.get(LIST))
    assert "Migrated 2 legacy providers: copied 1 provider key, 0 user keys, 0 model configs." in listing
    assert listing.count("badge-ok\">Migrated") == 2

    again = text(browser.get(MIGRATE))
    assert "Nothing to migrate: 2 legacy providers already migrated." in again
    assert "Migrate 2 providers" not in again
    post_form(browser, MIGRATE, csrf_path=LIST)
    assert "Nothing to migrate" in text(browser.get(LIST))


def test_a_failed_provider_is_flashed(app, browser):
    from app.extensions import db
    from app.models import AIProvider

    create(browser)
    with app.app_context():
        db.session.add(AIProvider(id=uuid.uuid4(), type="openai", name="agents-openai"))
        db.session.commit()
    assert "Cannot migrate" in text(browser.get(MIGRATE))
    post_form(browser, MIGRATE, csrf_path=LIST)
    page = text(browser.get(LIST))
    assert "openai: the name agents-openai is taken by another AI provider." in page
    assert "Not migrated" in page


def test_the_list_flags_a_central_key_that_is_missing_but_needed(app, browser):
    """A central key that is on but has no stored key (e.g. after `dbcrypt delete --yes`) is
    flagged "No key"; a keyless Bedrock provider needs none (AWS credentials) and is not."""
    from app.extensions import db

    create(browser, provider="openai")
    create(browser, provider="bedrock", api_key=None)
    with app.app_context():
        db.session.execute(sa.text(
            "UPDATE chat_providers SET api_key_ciphertext = NULL, api_key_digest = NULL, api_key_hint = NULL"
        ))
        db.session.commit()
    rows = re.findall(r"<tr>.*?</tr>", text(browser.get(LIST)), flags=re.S)
    cells = {label: row for row in rows for label in ("OpenAI", "AWS Bedrock") if label in row}
    assert 'badge-warn">No key' in cells["OpenAI"]
    assert "No key" not in cells["AWS Bedrock"]
