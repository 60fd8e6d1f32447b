"""Forms of the user key settings page: shape only; the key rules live in the service."""

from flask_wtf import FlaskForm
from wtforms import PasswordField


class UserKeyForm(FlaskForm):
    api_key = PasswordField(
        "API key",
        description="Stored encrypted. After saving, only its last four characters are shown.",
    )
