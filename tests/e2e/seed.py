"""People and data for the browser tests, made the way people make them: the first administrator
through /setup, users through the admin page, and the bulk of providers and models through the
JSON API with a token the administrator created on /settings/tokens."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.support import API, PASSWORD, new_key

ADMIN = "ada@example.com"
MEMBER = "mel@example.com"
OTHER = "bo@example.com"


def set_up_admin(web):
    """First run: create the administrator on /setup and sign in. Returns the admin's tab."""
    tab = web.tab()
    tab.goto("/setup")
    tab.fill("Email", ADMIN)
    tab.fill("Name", "Ada Admin")
    tab.fill("Password", PASSWORD)
    tab.fill("Repeat password", PASSWORD)
    tab.press("Create administrator")
    tab.sign_in(ADMIN)
    return tab


def create_user(admin, email: str, name: str, role: str = "Member") -> None:
    admin.goto("/admin/users")
    admin.fill("Email", email)
    admin.fill("Name", name)
    admin.fill("Initial password", PASSWORD)
    admin.choose("Role", role)
    admin.press("Create user")
    assert f"User {email} created." in admin.flash(), admin.flash()


def create_token(tab, name: str) -> str:
    """Create an API token on /settings/tokens; return it as the page shows it (once)."""
    tab.goto("/settings/tokens")
    tab.fill("Token name", name)
    tab.press("Create token")
    return tab.page.get_by_label("New token", exact=True).input_value()


class Api:
    """The JSON API with a bearer token (urllib: nothing of the browser is involved)."""

    def __init__(self, base_url: str, token: str):
        self.base_url, self.token = base_url, token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + API + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def ok(self, method: str, path: str, body: dict | None = None):
        status, answer = self.call(method, path, body)
        assert status < 300, f"{method} {path}: {status} {answer}"
        return answer


def seed_catalogue(api: Api) -> dict:
    """Providers with every key policy and status, models on each, a legacy provider. Returns
    the providers by name."""
    providers = {}
    for spec, keys in [
        ({"type": "openai", "name": "openai", "display_name": "OpenAI", "key_policy": "user_preferred"}, 2),
        ({"type": "anthropic", "name": "anthropic", "display_name": "Anthropic", "key_policy": "provider_only"}, 1),
        ({"type": "openrouter", "name": "openrouter", "display_name": "OpenRouter", "key_policy": "user_only"}, 0),
        ({"type": "azure", "name": "azure-eu", "display_name": "Azure OpenAI (EU)", "key_policy": "provider_only",
          "base_url": "https://contoso-eu.openai.azure.com"}, 0),
    ]:
        provider = api.ok("POST", "/ai-providers", spec)
        providers[spec["name"]] = provider
        for i in range(keys):
            api.ok("POST", f"/ai-providers/{provider['id']}/keys", {"api_key": new_key(f"{spec['name']}{i}")})
    for provider, model, display_name in [
        ("openai", "gpt-4.1", "GPT-4.1"),
        ("openai", "gpt-4o-mini", "GPT-4o mini"),
        ("anthropic", "claude-sonnet-4", "Claude Sonnet 4"),
        ("openrouter", "meta-llama/llama-3.3-70b-instruct", "Llama 3.3 70B"),
        ("azure-eu", "gpt-4o", "GPT-4o (EU)"),
    ]:
        api.ok("POST", "/model-configs", {"ai_provider_id": providers[provider]["id"], "model": model,
                                          "display_name": display_name, "context_limit": 128000})
    api.ok("PATCH", f"/ai-providers/{providers['azure-eu']['id']}", {"enabled": False})
    api.ok("POST", "/providers", {"provider": "google", "display_name": "Gemini (legacy)", "api_key": new_key("legacy"),
                                  "central_api_key_enabled": True, "allow_user_api_key": True,
                                  "allow_central_api_key_fallback": True})
    api.ok("POST", "/model-configs", {"provider": "google", "model": "gemini-2.5-pro", "display_name": "Gemini 2.5 Pro"})
    return providers


def add_member(admin, group_id: str, email: str) -> None:
    """Add a user to a group on the group's page, by email."""
    admin.goto(f"/admin/groups/{group_id}")
    admin.fill("Email", email)
    admin.press("Add member")
    assert "is a member of" in admin.flash(), admin.flash()


def seed_groups(api: Api) -> dict:
    """Two groups: Research (Claude Sonnet 4 is open only to it) and Support (GPT-4o (EU) is open
    only to it). Returns the groups by name, each with the id of its model (`config_id`)."""
    groups = {spec["name"]: api.ok("POST", "/groups", spec) for spec in (
        {"name": "research", "display_name": "Research"}, {"name": "support", "display_name": "Support desk"})}
    configs = {c["display_name"]: c for c in api.ok("GET", "/model-configs")}
    for config, group in (("Claude Sonnet 4", "research"), ("GPT-4o (EU)", "support")):
        api.ok("PATCH", f"/model-configs/{configs[config]['id']}", {"access": "groups",
                                                                     "group_ids": [groups[group]["id"]]})
        groups[group]["config_id"] = configs[config]["id"]
    return groups


def seed_everything(web, server, admin=None):
    """The full picture the accessibility pass and the screenshots look at: an admin, a member
    with a key of their own, a deactivated user, providers, models, a legacy provider and two
    groups (the member in one of them, a model open only to each). Returns (admin tab, member
    tab, providers by name, groups by name)."""
    admin = admin or set_up_admin(web)
    api = Api(server.url, create_token(admin, "Provisioning script"))
    providers = seed_catalogue(api)
    groups = seed_groups(api)
    create_user(admin, MEMBER, "Mel Member")
    create_user(admin, OTHER, "Bo Other")
    add_member(admin, groups["research"]["id"], MEMBER)
    add_member(admin, groups["research"]["id"], ADMIN)
    admin.goto("/admin/users")
    admin.follow("Deactivate…", within=admin.row(OTHER))
    admin.press("Deactivate user")
    member = web.tab()
    member.sign_in(MEMBER)
    member.goto("/settings/keys")
    openai = member.card("OpenAI")
    member.fill("API key", new_key("member"), within=openai)
    member.press("Save key", within=openai)
    assert "was saved" in member.flash(), member.flash()
    return admin, member, providers, groups
