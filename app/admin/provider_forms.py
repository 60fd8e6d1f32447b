"""Forms of the provider pages: shape only. Every rule (names, URLs, key sizes) is the service's,
and its errors are placed next to these fields with `apply_error`."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField

from app.pages import choices
from app.services.providers import POLICY_LABELS, TYPE_LABELS

NAME_HELP = "Lowercase letters, numbers and single hyphens, e.g. openai-eu. API clients and logs use it."
DISPLAY_NAME_HELP = "What people see in model pickers. Leave empty to show the name."
BASE_URL_HELP = (
    "Leave empty to use the provider's standard endpoint. Must be an http or https URL. Private, loopback and "
    "internal addresses are refused unless the deployment allows the host in PRIVATE_BASE_URL_ALLOWLIST; "
    "cloud metadata addresses are always refused."
)
POLICY_HELP = (
    "Whose key pays for requests: only the shared keys stored here, a user's own key when they have one, "
    "or always the user's own key."
)
ENABLED_HELP = "A disabled provider keeps its keys and settings but serves no models."
API_KEY_HELP = "Stored encrypted. It is never shown again: only its last 4 characters appear in the list."


def _policy_choices():
    return choices(list(POLICY_LABELS.items()))


class ProviderEditForm(FlaskForm):
    # validate_choice is off on the selects: the service decides what is valid and says so.
    name = StringField("Name", description=NAME_HELP)
    display_name = StringField("Display name", description=DISPLAY_NAME_HELP)
    base_url = StringField("Base URL", description=BASE_URL_HELP)
    key_policy = SelectField("Key policy", choices=_policy_choices(), default="provider_only",
                             validate_choice=False, description=POLICY_HELP)
    enabled = BooleanField("Enabled", default=True, description=ENABLED_HELP)


class ProviderCreateForm(ProviderEditForm):
    type = SelectField("Type", choices=choices([("", "Choose a provider type…"), *TYPE_LABELS.items()]), default="",
                       validate_choice=False, description="Cannot be changed later.")


class ProviderKeyForm(FlaskForm):
    api_key = PasswordField("API key", description=API_KEY_HELP)
