"""One plain-text rule (valid UTF-8, no control characters) for every free text field: provider
names and keys, model ids and display names answer the same way."""

from __future__ import annotations

import pytest

from app.errors import InvalidInput
from app.services.text import HAS_CONTROL, NOT_UTF8, check_text, clean_text, text_problem

LONE_SURROGATE = "a\ud800b"


@pytest.mark.parametrize(("value", "problem"), [
    ("plain text é ✓", None),
    ("nul\x00", HAS_CONTROL),
    ("line\nbreak", HAS_CONTROL),
    ("tab\there", HAS_CONTROL),
    ("del\x7f", HAS_CONTROL),
    ("c1\x85", HAS_CONTROL),
    (LONE_SURROGATE, NOT_UTF8),
])
def test_text_problem(value, problem):
    assert text_problem(value) == problem


def test_control_characters_may_be_left_to_the_caller():
    assert text_problem("a\nb", allow_control=True) is None
    assert text_problem(LONE_SURROGATE, allow_control=True) == NOT_UTF8


def test_clean_text_trims_limits_and_names_the_rule():
    assert clean_text(None, "f", "Bad.", 5, noun="Things") == ""
    assert clean_text("  abc  ", "f", "Bad.", 5, noun="Things") == "abc"
    for raw, detail in [("abcdef", "Things are at most 5 characters."), (7, "Things must be text."),
                        ("a\x00", "Things cannot contain control characters."),
                        (LONE_SURROGATE, "Things must be valid UTF-8 text.")]:
        with pytest.raises(InvalidInput) as raised:
            clean_text(raw, "f", "Bad.", 5, noun="Things")
        assert (raised.value.message, raised.value.detail, raised.value.field) == ("Bad.", detail, "f")
        with pytest.raises(InvalidInput) as raised:
            clean_text(raw, "f", "Bad.", 5, noun="Things", as_validation=True)
        assert raised.value.detail is None
        assert [(v.field, v.detail) for v in raised.value.validations] == [("f", detail)]


def test_check_text_returns_the_value_unchanged():
    assert check_text(" x ", "f", "Bad.", noun="Things") == " x "


# In the middle: trimming would remove trailing ones (NEL, \x85, is whitespace to str.strip).
# Lone surrogates are left out here: the JSON body parser may refuse them before any service.
@pytest.mark.parametrize("bad", ["a\x00b", "a\x1b[31mb", "a\x85b"])
def test_every_free_text_field_refuses_the_same_characters(app, admin_api, member_api, bad):
    """The rule lives once: provider display names and keys, user keys, model ids and display
    names, legacy display names and keys all refuse what the helper refuses (400, nothing stored)."""
    provider = admin_api.post("/ai-providers", json={"type": "openai", "name": "p", "key_policy": "user_only"})
    pid = provider.get_json()["id"]
    calls = [
        (admin_api.post, "/ai-providers", {"type": "openai", "name": "q", "display_name": bad},
         "Invalid display name."),
        (admin_api.patch, f"/ai-providers/{pid}", {"display_name": bad}, "Invalid display name."),
        (admin_api.post, f"/ai-providers/{pid}/keys", {"api_key": "sk-" + bad}, "Invalid API key."),
        (member_api.put, f"/user-ai-provider-keys/{pid}", {"api_key": "sk-" + bad}, "Invalid API key."),
        (admin_api.post, "/model-configs", {"ai_provider_id": pid, "model": bad}, "Invalid model."),
        (admin_api.post, "/model-configs", {"ai_provider_id": pid, "model": "m", "display_name": bad},
         "Invalid display name."),
        (admin_api.post, "/providers", {"provider": "bedrock", "display_name": bad}, "Invalid display name."),
        (admin_api.post, "/providers", {"provider": "openai", "api_key": "sk-" + bad}, "Invalid API key."),
    ]
    for call, path, body, message in calls:
        response = call(path, json=body)
        assert (response.status_code, response.get_json()["message"]) == (400, message), (path, body)
    assert [p["name"] for p in admin_api.get("/ai-providers").get_json()] == ["p"]
    assert admin_api.get("/ai-providers/" + pid).get_json()["display_name"] == "p"
    assert admin_api.get(f"/ai-providers/{pid}/keys").get_json() == []
    assert member_api.get("/user-ai-provider-keys").get_json()[0]["has_user_api_key"] is False
    assert admin_api.get("/model-configs").get_json() == []
    assert admin_api.get("/providers").get_json() == []
