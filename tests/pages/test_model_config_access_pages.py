"""Who can use a model config, on the admin pages ("Who can use it: Everyone / Only members of"
with a checkbox per group, and the list's column) and on a member's /models page, driven like a
browser (forms + CSRF)."""

from __future__ import annotations

import html
import re

import pytest

from tests.support import login, post_form
from tests.support.db import sql
from tests.support.factories import make_config, make_group, make_provider, restrict_config


@pytest.fixture
def admin_client(client, admin):
    login(client, admin.email)
    return client


@pytest.fixture
def provider_id(app):
    return make_provider(app, "shared", "provider_only", shared_key=True)


def text(response) -> str:
    return response.get_data(as_text=True)


def checked(page: str, name: str) -> list[str]:
    """The values of the checked inputs named `name`."""
    tags = re.findall(rf'<input[^>]*\bname="{name}"[^>]*>', page)
    return [re.search(r'value="([^"]*)"', t).group(1) for t in tags if re.search(r"\bchecked\b", t)]


def flashes(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<div class="flash flash-\w+">(.*?)</div>', page, re.S)]


def access_of(app, model: str) -> tuple[str, list[str]]:
    [(access,)] = sql(app, "SELECT access FROM chat_model_configs WHERE model = :m AND NOT deleted", m=model)
    groups = sql(app, "SELECT groups.name FROM model_config_groups JOIN groups ON groups.id = group_id "
                      "JOIN chat_model_configs ON chat_model_configs.id = model_config_id "
                      "WHERE model = :m ORDER BY groups.name", m=model)
    return access, [g for (g,) in groups]


FORM = {"context_limit": "1000", "compression_threshold": "70", "options": "{}", "enabled": "y"}


def test_the_form_offers_everyone_or_a_checkbox_per_group(app, admin_client, provider_id):
    make_group(app, "zeta", display_name="Zeta team")
    make_group(app, "alpha")
    page = text(admin_client.get("/admin/model-configs/new"))
    assert "<legend class=\"field-label\">Who can use it</legend>" in page
    assert re.search(r'<input checked id="access-0" name="access" type="radio" value="everyone">', page)
    assert '<label for="access-1">Only members of</label>' in page
    labels = re.findall(r'<label for="group_ids-\d+">(.*?)</label>', page)
    assert labels == ["alpha", "Zeta team"]  # by name


def test_the_form_says_when_there_is_no_group_yet(admin_client, provider_id):
    page = text(admin_client.get("/admin/model-configs/new"))
    assert "No groups yet." in page and 'href="/admin/groups/new"' in page


def test_create_a_model_open_only_to_some_groups(app, admin_client, provider_id):
    team, other = make_group(app, "team"), make_group(app, "other")
    make_group(app, "unused")
    response = post_form(admin_client, "/admin/model-configs/new", {
        **FORM, "ai_provider_id": provider_id, "model": "restricted", "access": "groups", "group_ids": [team, other]},
        follow=True)
    assert response.status_code == 200, flashes(text(response))
    assert access_of(app, "restricted") == ("groups", ["other", "team"])
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", text(response), re.S) if "restricted" in r)
    cell = re.search(r'<td data-label="Who can use it">(.*?)</td>', row, re.S).group(1)
    assert re.findall(r">([\w-]+)</a>", cell) == ["other", "team"]


def test_checked_groups_do_not_count_under_everyone(app, admin_client, provider_id):
    team = make_group(app, "team")
    post_form(admin_client, "/admin/model-configs/new", {
        **FORM, "ai_provider_id": provider_id, "model": "open", "access": "everyone", "group_ids": [team]})
    assert access_of(app, "open") == ("everyone", [])


def test_edit_shows_the_current_groups_and_changes_them(app, admin_client, provider_id):
    team, other = make_group(app, "team"), make_group(app, "other")
    config = make_config(app, provider_id, "gpt-4o")
    restrict_config(app, config, [team])
    path = f"/admin/model-configs/{config}/edit"
    page = text(admin_client.get(path))
    assert checked(page, "access") == ["groups"]
    assert checked(page, "group_ids") == [team]

    post_form(admin_client, path, {**FORM, "model": "gpt-4o", "access": "groups", "group_ids": [other]})
    assert access_of(app, "gpt-4o") == ("groups", ["other"])
    post_form(admin_client, path, {**FORM, "model": "gpt-4o", "access": "groups"})
    assert access_of(app, "gpt-4o") == ("groups", [])
    listing = text(admin_client.get("/admin/model-configs"))
    assert '<span class="badge badge-warn">No one</span>' in listing
    post_form(admin_client, path, {**FORM, "model": "gpt-4o", "access": "everyone", "group_ids": [other]})
    assert access_of(app, "gpt-4o") == ("everyone", [])
    assert re.search(r'<td data-label="Who can use it">\s*Everyone', text(admin_client.get("/admin/model-configs")))


def test_a_group_deleted_meanwhile_is_an_error_next_to_the_field(app, admin_client, provider_id):
    import uuid

    gone = str(uuid.uuid4())
    response = post_form(admin_client, "/admin/model-configs/new", {
        **FORM, "ai_provider_id": provider_id, "model": "late", "access": "groups", "group_ids": [gone]},
        csrf_path="/admin/model-configs/new")
    assert response.status_code == 400
    error = re.search(r'<p class="field-error" id="access-error">(.*?)</p>', text(response), re.S).group(1)
    assert gone in error
    assert sql(app, "SELECT count(*) FROM chat_model_configs") == [(0,)]
    assert 'value="late"' in text(response)  # the other values are kept


def test_the_models_page_shows_a_member_only_the_models_open_to_them(app, member, provider_id):
    team = make_group(app, "team")
    make_config(app, provider_id, "open-model")
    restricted = make_config(app, provider_id, "team-model")
    restrict_config(app, restricted, [team])
    browser = app.test_client()
    login(browser, member.email)
    page = text(browser.get("/models"))
    assert "open-model" in page and "team-model" not in page

    from app.services import groups
    from app.services.base import Actor

    with app.app_context():
        groups.add_member(Actor.system("test"), team, member.id)
    page = text(browser.get("/models"))
    assert "open-model" in page and "team-model" in page
