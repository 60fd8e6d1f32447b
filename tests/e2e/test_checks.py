"""The browser checks catch what they are meant to catch: each is shown a planted fault on a real
page (the page is altered in the browser only), so a passing suite means something."""

from __future__ import annotations

import pytest

from tests.e2e.pages import assert_destructive_controls_confirm, axe_violations, unlabelled_inputs, unreachable_by_keyboard
from tests.support import new_key

pytestmark = [pytest.mark.browser, pytest.mark.postgres_only]


def test_each_check_reports_a_planted_fault(web, findings, axe_source):
    tab = web.tab()
    tab.goto("/setup")
    assert unreachable_by_keyboard(tab.page) == []
    assert unlabelled_inputs(tab.page) == []

    # A control taken out of the tab order, an input without a label, a button that deletes
    # without a confirmation page, an inline script refused by the CSP, a console error.
    tab.page.evaluate("""() => {
        document.querySelector('button[type=submit]').setAttribute('tabindex', '-1');
        document.querySelector('label[for=name]').removeAttribute('for');
        const form = document.createElement('form');
        form.method = 'post';
        form.action = '/admin/providers/x/keys/y';
        form.innerHTML = '<button type="submit">Delete key</button>';
        document.querySelector('main').append(form);
        const script = document.createElement('script');
        script.textContent = 'window.inlineRan = true';
        document.body.append(script);
        console.error('planted console error');
    }""")
    assert unreachable_by_keyboard(tab.page) == ['button "Create administrator"']
    assert unlabelled_inputs(tab.page) == ["input name=name"]
    with pytest.raises(AssertionError, match="acts without a confirmation page first"):
        assert_destructive_controls_confirm(tab.page)
    assert {v["id"] for v in axe_violations(tab.page, axe_source)} >= {"label"}
    assert tab.page.evaluate("window.inlineRan") is None
    assert [v["directive"] for v in findings.csp_violations] == ["script-src-elem"]
    assert [text for _, text in findings.console_errors if "planted" in text] == ["planted console error"]

    # A key in what the browser received is reported.
    key = new_key("planted")
    tab.page.evaluate("(k) => document.querySelector('h1').textContent = k", key)
    tab.settle()
    assert findings.leaks() and key[:18] in findings.leaks()[0]

    # Planted on purpose: the teardown must not count them.
    tab.goto("/setup")
    findings.console_errors.clear()
    findings.csp_violations.clear()
    findings.documents.clear()
