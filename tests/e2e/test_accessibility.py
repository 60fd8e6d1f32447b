"""Every page, empty and full, as an administrator and as a member: axe-core finds no serious or
critical violation, Tab alone reaches every visible control, and every input has a label.

axe-core runs in the same CSP-enforced tab as everything else: Playwright's `evaluate` is not
subject to the page's Content-Security-Policy, so nothing has to be relaxed to inject it.

The findings of every page (all impacts) are written to test-artifacts/axe-report.json and
test-artifacts/axe-report.md.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.pages import axe_violations, unlabelled_inputs, unreachable_by_keyboard
from tests.e2e.seed import ADMIN, MEMBER, create_token, seed_everything
from tests.support import PASSWORD, new_key
from tests.support.stub_provider import StubProvider

pytestmark = [pytest.mark.browser, pytest.mark.postgres_only]

IMPACTS = ("critical", "serious", "moderate", "minor")
BLOCKING = ("critical", "serious")


class Audit:
    def __init__(self, axe_source: str):
        self.axe_source = axe_source
        self.pages: dict[str, dict] = {}

    def __call__(self, name: str, tab, path: str | None = None, status: int = 200) -> None:
        """Audit the page the tab shows (after loading `path`, when given)."""
        if path is not None:
            tab.goto(path, status=status)
        assert name not in self.pages, name
        self.pages[name] = {
            "url": tab.path,
            # Keyboard first: it needs focus where a fresh page load leaves it.
            "unreachable_by_keyboard": unreachable_by_keyboard(tab.page),
            "unlabelled_inputs": unlabelled_inputs(tab.page),
            "axe": axe_violations(tab.page, self.axe_source),
        }

    def counts(self, name: str) -> Counter:
        return Counter(v["impact"] for v in self.pages[name]["axe"])

    def write_report(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "axe-report.json").write_text(json.dumps(self.pages, indent=2))
        lines = ["| page | url | " + " | ".join(IMPACTS) + " | rules |", "|---|---|" + "---|" * (len(IMPACTS) + 1)]
        for name, page in self.pages.items():
            counts = self.counts(name)
            rules = ", ".join(sorted({f"{v['id']} ({v['impact']})" for v in page["axe"]})) or "none"
            lines.append(f"| {name} | `{page['url']}` | " + " | ".join(str(counts[i]) for i in IMPACTS) + f" | {rules} |")
        (ARTIFACTS / "axe-report.md").write_text("\n".join(lines) + "\n")

    def problems(self) -> list[str]:
        found = []
        for name, page in self.pages.items():
            found += [f"{name}: axe {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
                      for v in page["axe"] if v["impact"] in BLOCKING]
            found += [f"{name}: Tab never reaches {c}" for c in page["unreachable_by_keyboard"]]
            found += [f"{name}: no label for {c}" for c in page["unlabelled_inputs"]]
        return found


def test_every_page_is_accessible_by_axe_keyboard_and_labels(web, server, axe_source):
    audit = Audit(axe_source)
    tab = web.tab()

    # First run and signing in, with and without errors.
    audit("setup", tab, "/setup")
    tab.press("Create administrator", status=400)
    audit("setup, with errors", tab)
    tab.fill("Email", ADMIN)
    tab.fill("Name", "Ada Admin")
    tab.fill("Password", PASSWORD)
    tab.fill("Repeat password", PASSWORD)
    tab.press("Create administrator")
    audit("login", tab)
    tab.fill("Email", ADMIN)
    tab.fill("Password", "not the password")
    tab.press("Sign in", status=401)
    audit("login, with errors", tab)
    tab.sign_in(ADMIN)

    # An empty Switchboard.
    audit("home (admin)", tab)
    for name, path in [("providers, empty", "/admin/providers"), ("model configs, empty", "/admin/model-configs"),
                       ("model config new, no provider", "/admin/model-configs/new"),
                       ("legacy providers, empty", "/admin/legacy-providers"), ("models, empty", "/models"),
                       ("groups, empty", "/admin/groups"),
                       ("settings keys, empty", "/settings/keys"), ("settings tokens, empty", "/settings/tokens")]:
        audit(name, tab, path)

    # A full one.
    admin, member, providers, groups = seed_everything(web, server, admin=tab)
    openai = providers["openai"]["id"]
    research = groups["research"]["id"]
    audit("providers", admin, "/admin/providers")
    audit("provider new", admin, "/admin/providers/new")
    admin.fill("Name", "Not A Name")
    admin.press("Create provider", status=400)
    audit("provider new, with errors", admin)
    audit("provider detail", admin, f"/admin/providers/{openai}")
    admin.follow("Delete…", within=admin.page.locator("#keys tbody tr").first)
    audit("provider key delete confirmation", admin)
    audit("provider edit", admin, f"/admin/providers/{openai}/edit")
    audit("provider delete confirmation", admin, f"/admin/providers/{openai}/delete")
    audit("model configs", admin, "/admin/model-configs")
    audit("model config new", admin, "/admin/model-configs/new")
    admin.fill("Context limit (tokens)", "0")
    admin.press("Add model", status=400)
    audit("model config new, with errors", admin)
    admin.goto("/admin/model-configs")
    admin.follow("Edit", within=admin.row("Claude Sonnet 4"))
    audit("model config edit", admin)
    admin.goto("/admin/model-configs")
    admin.follow("Delete…", within=admin.row("Claude Sonnet 4"))
    audit("model config delete confirmation", admin)
    audit("legacy providers", admin, "/admin/legacy-providers")
    audit("legacy provider new", admin, "/admin/legacy-providers/new")
    admin.goto("/admin/legacy-providers")
    admin.follow("Edit", within=admin.row("Gemini (legacy)"))
    audit("legacy provider edit", admin)
    admin.goto("/admin/legacy-providers")
    admin.follow("Delete…", within=admin.row("Gemini (legacy)"))
    audit("legacy provider delete confirmation", admin)
    audit("legacy migration confirmation", admin, "/admin/legacy-providers/migrate")
    audit("groups", admin, "/admin/groups")
    audit("group new", admin, "/admin/groups/new")
    admin.fill("Name", "Not A Name")
    admin.press("Create group", status=400)
    audit("group new, with errors", admin)
    audit("group detail", admin, f"/admin/groups/{research}")
    admin.fill("Email", "nobody@example.com")
    admin.press("Add member", status=400)
    audit("group detail, with errors", admin)
    admin.follow("Remove…", within=admin.row(MEMBER))
    audit("group member remove confirmation", admin)
    audit("group edit", admin, f"/admin/groups/{research}/edit")
    audit("group delete confirmation", admin, f"/admin/groups/{research}/delete")
    audit("users", admin, "/admin/users")
    admin.follow("Deactivate…", within=admin.row(MEMBER))
    audit("user deactivate confirmation", admin)
    audit("audit log", admin, "/admin/audit")
    create_token(admin, "Nightly export")
    audit("settings tokens, new token shown", admin)
    admin.follow("Revoke…", within=admin.row("Nightly export"))
    audit("token revoke confirmation", admin)
    audit("settings password", admin, "/settings/password")
    admin.fill("Current password", "wrong")
    admin.press("Change password", status=400)
    audit("settings password, with errors", admin)
    audit("models (admin)", admin, "/models")
    stub = StubProvider().start()
    try:
        admin.goto("/admin/providers/new")
        admin.choose("Type", "OpenAI-compatible")
        admin.fill("Name", "local-llm")
        admin.fill("Base URL", stub.url + "/v1")
        admin.press("Create provider")
        admin.fill("API key", new_key("stub"))
        admin.press("Save key")
        audit("provider model discovery", admin, admin.path + "/discover")
        admin.press("Discover models")
        audit("provider model discovery, listed", admin)
    finally:
        stub.stop()
    audit("error 404", admin, "/admin/providers/00000000-0000-0000-0000-000000000000", status=404)

    audit("home (member)", member, "/")
    audit("models (member)", member, "/models")
    audit("settings keys (member)", member, "/settings/keys")
    member.follow("Remove…", within=member.card("OpenAI"))
    audit("settings key remove confirmation", member)
    audit("error 403", member, "/admin/providers", status=403)

    audit.write_report()
    problems = audit.problems()
    assert not problems, "\n".join(problems)
