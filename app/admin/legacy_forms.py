"""Forms of the legacy provider pages: shape only. The credential policy, key and URL rules are
the legacy service's; its errors are placed next to these fields with `apply_error`."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField
from wtforms.validators import ValidationError

from app.pages import choices
from app.services.providers import TYPE_LABELS

API_KEY_HELP = ("Stored encrypted and never shown again: only its last 4 characters appear in the list. "
                "Not needed for AWS Bedrock, which uses the deployment's AWS credentials.")
EDIT_API_KEY_HELP = "Leave empty to keep the stored key. " + API_KEY_HELP


class LegacyProviderEditForm(FlaskForm):
    display_name = StringField("Display name", description="What people see. Leave empty to show the type's name.")
    base_url = StringField("Base URL", description="Leave empty to use the provider's standard endpoint.")
    api_key = PasswordField("Central API key", description=EDIT_API_KEY_HELP)
    remove_api_key = BooleanField("Remove the stored central key",
                                  description="Only possible while the central API key is turned off.")
    enabled = BooleanField("Enabled", default=True, description="A disabled provider serves no models.")
    central_api_key_enabled = BooleanField("Central API key", default=True,
                                           description="Requests may use the key stored here.")
    allow_user_api_key = BooleanField("User API keys", description="Users may save their own key for this provider.")
    allow_central_api_key_fallback = BooleanField(
        "Fall back to the central key",
        description="Users without a key of their own use the central key. Needs both of the above.",
    )

    def validate_remove_api_key(self, field: BooleanField) -> None:
        if field.data and self.api_key.data:
            raise ValidationError("Enter a new key or remove the stored one, not both.")


class LegacyProviderCreateForm(LegacyProviderEditForm):
    # validate_choice is off: the service decides what a valid type is and says so.
    provider = SelectField("Type", choices=choices([("", "Choose a provider type…"), *TYPE_LABELS.items()]),
                           default="", validate_choice=False, description="One legacy provider per type.")
    api_key = PasswordField("Central API key", description=API_KEY_HELP)
    remove_api_key = None
