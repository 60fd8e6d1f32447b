"""Screenshots of the main pages at desktop (1280x800) and phone (390x844) widths.

`UPDATE_SCREENSHOTS=1 make test-postgres PYTEST_ARGS=tests/e2e/test_screenshots.py` (or the same
with `.venv/bin/python -m pytest`) rewrites docs/screenshots/*.png; otherwise they go to
test-artifacts/screenshots/ so that `make test` never changes committed files. Either way, no page
may scroll sideways at phone width (a person on a phone would have to pan to read it), and axe-core
finds no serious or critical violation in the phone layout either.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.pages import axe_violations
from tests.e2e.seed import seed_everything, set_up_admin
from tests.support import PROJECT_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.postgres_only]

WIDTHS = {"desktop": {"width": 1280, "height": 800}, "narrow": {"width": 390, "height": 844}}
DOCS = Path(PROJECT_ROOT) / "docs" / "screenshots"


def output_dir() -> Path:
    folder = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_screenshots_of_the_main_pages(web, server, axe_source):
    admin, member, providers, groups = seed_everything(web, server)
    anonymous = web.tab()
    openai = providers["openai"]["id"]
    research = groups["research"]["id"]
    shots = [
        ("login", anonymous, "/login"),
        ("providers", admin, "/admin/providers"),
        ("provider-detail", admin, f"/admin/providers/{openai}"),
        ("provider-delete", admin, f"/admin/providers/{openai}/delete"),
        ("model-configs", admin, "/admin/model-configs"),
        ("groups", admin, "/admin/groups"),
        ("group-detail", admin, f"/admin/groups/{research}"),
        ("group-delete", admin, f"/admin/groups/{research}/delete"),
        ("model-config-access", admin, f"/admin/model-configs/{groups['research']['config_id']}/edit#access"),
        ("users", admin, "/admin/users"),
        ("audit", admin, "/admin/audit"),
        ("settings-keys", member, "/settings/keys"),
        ("models", member, "/models"),
    ]
    folder = output_dir()
    problems = []
    for width, viewport in WIDTHS.items():
        for name, tab, path in shots:
            tab.page.set_viewport_size(viewport)
            tab.goto(path)
            overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 0:
                problems.append(f"{path} at {viewport['width']} px scrolls sideways by {overflow} px")
            tab.page.screenshot(path=str(folder / f"{name}-{width}.png"), animations="disabled", caret="hide")
            if width == "narrow":
                problems += [f"{path} at {viewport['width']} px: axe {v['impact']} {v['id']} at {v['nodes']}"
                             for v in axe_violations(tab.page, axe_source) if v["impact"] in ("critical", "serious")]
    assert not problems, "\n".join(problems)


def test_screenshots_of_the_sign_in_page_with_sso(sso_web, axe_source):
    """`login-sso-*.png`: the sign-in page when single sign-on is configured (the password form
    stays, with the Sign in with SSO button under it)."""
    set_up_admin(sso_web)  # an account exists, so /login is the sign-in page
    tab = sso_web.tab()
    folder = output_dir()
    problems = []
    for width, viewport in WIDTHS.items():
        tab.page.set_viewport_size(viewport)
        tab.goto("/login")
        assert tab.page.get_by_role("link", name="Sign in with SSO").is_visible()
        overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            problems.append(f"/login at {viewport['width']} px scrolls sideways by {overflow} px")
        tab.page.screenshot(path=str(folder / f"login-sso-{width}.png"), animations="disabled", caret="hide")
        problems += [f"/login at {viewport['width']} px: axe {v['impact']} {v['id']} at {v['nodes']}"
                     for v in axe_violations(tab.page, axe_source) if v["impact"] in ("critical", "serious")]
    assert not problems, "\n".join(problems)
