"""A tab driven the way a person uses the app (labels, link and button names), and the checks a
careful person makes on every page: keyboard reach, labelled inputs, destructive actions behind a
confirmation page, accessibility (axe-core)."""

from __future__ import annotations

import re
from contextlib import suppress
from urllib.parse import urlparse

from playwright.sync_api import Locator, Page, Response

from tests.support import PASSWORD

DESTRUCTIVE = re.compile(r"\b(delete|remove|revoke|deactivate)", re.IGNORECASE)
CONFIRMATION_PATH = re.compile(r"/(delete|remove|revoke|deactivate)$")


def _label(text: str) -> re.Pattern:
    """A label's exact text; a required field's label ends in an asterisk (hidden from assistive
    technology, but part of the text Playwright matches)."""
    return re.compile(rf"^\s*{re.escape(text)}\s*\*?\s*$")


class Tab:
    """One person's browser tab. Every navigation keeps the response bodies and the DOM for the
    leak scan and checks the page's destructive controls."""

    def __init__(self, page: Page, findings):
        self.page, self.findings = page, findings
        self._responses: list[Response] = []
        page.on("response", lambda response: self._responses.append(response))

    # --- navigation -----------------------------------------------------------------------------

    def settle(self) -> None:
        """Keep what the browser received and shows now (checked for keys at teardown)."""
        for response in self._responses:
            with suppress(Exception):  # redirects and evicted bodies have none
                self.findings.documents.append((response.url, response.text()))
        self._responses.clear()
        with suppress(Exception):
            self.findings.documents.append((self.page.url, self.page.content()))

    def _arrived(self, response: Response | None, status: int | None) -> Response | None:
        self.settle()
        if response is not None and status is not None and status >= 400:
            self.findings.expected_statuses.add((response.url, status))
        if status is not None:
            assert response is not None and response.status == status, (
                f"{self.page.url}: expected {status}, got {response.status if response else None}")
        if response is not None and response.headers.get("content-type", "").startswith("text/html"):
            assert_destructive_controls_confirm(self.page)
        return response

    def goto(self, path: str, status: int | None = 200) -> Response | None:
        return self._arrived(self.page.goto(path), status)

    def navigate(self, locator: Locator, status: int | None = 200) -> Response | None:
        """Click something that loads a page; return the final response."""
        with self.page.expect_navigation() as navigation:
            locator.click()
        return self._arrived(navigation.value, status)

    def follow(self, name: str, within: str | Locator | None = None, status: int | None = 200) -> Response | None:
        return self.navigate(self._scope(within).get_by_role("link", name=name, exact=True).first, status)

    def press(self, name: str, within: str | Locator | None = None, status: int | None = 200) -> Response | None:
        return self.navigate(self._scope(within).get_by_role("button", name=name, exact=True).first, status)

    def _scope(self, within: str | Locator | None):
        if within is None:
            return self.page
        if isinstance(within, str):
            return self.page.locator(within)
        return within

    # --- forms ------------------------------------------------------------------------------------

    def fill(self, label: str, value: str, within: str | Locator | None = None) -> None:
        self._scope(within).get_by_label(_label(label)).fill(value)

    def choose(self, label: str, option: str) -> None:
        self.page.get_by_label(_label(label)).select_option(label=option)

    def tick(self, label: str, on: bool = True) -> None:
        self.page.get_by_label(_label(label)).set_checked(on)

    def value(self, label: str) -> str:
        return self.page.get_by_label(_label(label)).input_value()

    # --- what the person reads --------------------------------------------------------------------

    @property
    def path(self) -> str:
        return urlparse(self.page.url).path

    def text(self, selector: str = "main") -> str:
        return self.page.locator(selector).inner_text()

    def flash(self) -> str:
        flashes = self.page.locator(".flashes")
        return flashes.inner_text() if flashes.count() else ""

    def heading(self) -> str:
        return self.page.locator("h1").first.inner_text()

    def row(self, text: str) -> Locator:
        """The table row that mentions `text` (exactly one)."""
        rows = self.page.locator("tbody tr").filter(has_text=text)
        assert rows.count() == 1, f"{self.path}: {rows.count()} rows mention {text!r}"
        return rows

    def card(self, title: str) -> Locator:
        return self.page.locator("section.key-card").filter(has=self.page.get_by_role("heading", name=title, exact=True))

    def field_error(self, label: str) -> str:
        """The error shown in the same field block as the input labelled `label`."""
        control = self.page.get_by_label(_label(label))
        assert control.get_attribute("aria-invalid") == "true", f"{label} is not marked invalid"
        error_ids = (control.get_attribute("aria-describedby") or "").split()
        errors = [self.page.locator(f"[id='{i}']") for i in error_ids if i.endswith("-error")]
        assert errors, f"{label}: no error is tied to the field"
        field = self.page.locator(".field").filter(has=control).last
        assert field.locator(".field-error").count() == 1, f"{label}: the error is not next to the field"
        return errors[0].inner_text()

    # --- sessions ---------------------------------------------------------------------------------

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.goto("/login")
        self.fill("Email", email)
        self.fill("Password", password)
        self.press("Sign in")
        assert self.path == "/", f"sign-in as {email} ended on {self.path}: {self.text()[:300]}"


# --- page checks ----------------------------------------------------------------------------------

_DESTRUCTIVE_CONTROLS = """
(pattern) => {
  const re = new RegExp(pattern, 'i');
  const visible = (el) => el.getClientRects().length > 0;
  const links = [...document.querySelectorAll('a[href]')].filter(a => visible(a) && re.test(a.textContent))
    .map(a => ({text: a.textContent.trim(), href: new URL(a.href).pathname}));
  const buttons = [...document.querySelectorAll('button, input[type=submit]')]
    .filter(b => visible(b) && re.test(b.textContent || b.value || ''))
    .map(b => ({text: (b.textContent || b.value).trim(), method: b.form ? b.form.method : null,
                action: b.form ? new URL(b.form.action).pathname : null}));
  return {links, buttons};
}
"""


def assert_destructive_controls_confirm(page: Page) -> None:
    """Delete / remove / revoke / deactivate: a link to a confirmation page (GET), and the POST
    button only on that confirmation page."""
    found = page.evaluate(_DESTRUCTIVE_CONTROLS, DESTRUCTIVE.pattern)
    path = urlparse(page.url).path
    for link in found["links"]:
        assert CONFIRMATION_PATH.search(link["href"]), f"{path}: {link} does not lead to a confirmation page"
    for button in found["buttons"]:
        assert button["method"] == "post", f"{path}: {button} is not a POST form"
        assert CONFIRMATION_PATH.search(path) and button["action"] == path, (
            f"{path}: {button} acts without a confirmation page first")


_FOCUSABLE = """
() => {
  // Every visible control, whatever its tabindex (a control taken out of the tab order is a
  // failure), plus anything else the page put in the tab order on purpose.
  const controls = 'a[href], button, input:not([type=hidden]), select, textarea, summary';
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const els = [...document.querySelectorAll(controls + ', [tabindex]:not([tabindex^="-"])')]
    .filter(el => !el.disabled && visible(el));
  window.__e2eFocused = new Set();
  document.addEventListener('focusin', (e) => {
    const i = e.target.getAttribute && e.target.getAttribute('data-e2e-focus');
    if (i !== null) window.__e2eFocused.add(Number(i));
  });
  return els.map((el, i) => {
    el.setAttribute('data-e2e-focus', String(i));
    const name = (el.getAttribute('aria-label') || el.textContent || el.value || el.name || '').trim().slice(0, 40);
    // A group of radio buttons is one tab stop (the arrow keys move within it).
    const group = el.type === 'radio' && el.name ? `${el.form ? el.form.action : ''} ${el.name}` : null;
    return {label: `${el.tagName.toLowerCase()} "${name}"`, group};
  });
}
"""


def unreachable_by_keyboard(page: Page) -> list[str]:
    """Press Tab through the page; return the visible controls focus never reached (a radio
    button counts as reached when Tab reached its group: browsers stop once per group)."""
    controls = page.evaluate(_FOCUSABLE)
    for _ in range(len(controls) + 3):
        page.keyboard.press("Tab")
    reached = set(page.evaluate("[...window.__e2eFocused]"))
    groups = {c["group"] for i, c in enumerate(controls) if i in reached and c["group"]}
    return [c["label"] for i, c in enumerate(controls) if i not in reached and c["group"] not in groups]


_UNLABELLED = """
() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !(el.getAttribute('aria-labelledby') || '').split(' ').some(id => id && document.getElementById(id)))
  .map(el => `${el.tagName.toLowerCase()} name=${el.name}`)
"""


def unlabelled_inputs(page: Page) -> list[str]:
    return page.evaluate(_UNLABELLED)


_AXE_RUN = """
async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                      nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
}
"""


def axe_violations(page: Page, axe_source: str) -> list[dict]:
    """Run axe-core (every rule it has, best practices included) on the page as it is."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, which the page's CSP does not govern (a
        # <script> tag, add_script_tag, would be refused by `script-src 'self'`).
        page.evaluate(axe_source)
    return page.evaluate(_AXE_RUN)
