"""Forms of the group pages and the users page's role change: shape only. Every rule (names,
unknown users, the last administrator) is a service's, and its errors are placed next to these
fields with `apply_error`."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField

from app.pages import choices

NAME_HELP = "Lowercase letters, numbers and single hyphens, e.g. data-science. SSO group claims match it."
DISPLAY_NAME_HELP = "What administrators see in lists. Leave empty to show the name."
MEMBER_EMAIL_HELP = "The email of an active user. They can use this group's models at once."
ROLES = (("member", "Member"), ("admin", "Administrator"))


class GroupForm(FlaskForm):
    name = StringField("Name", description=NAME_HELP)
    display_name = StringField("Display name", description=DISPLAY_NAME_HELP)

    FIELDS = ("name", "display_name")


class MemberAddForm(FlaskForm):
    email = StringField("Email", description=MEMBER_EMAIL_HELP)


class RoleForm(FlaskForm):
    # validate_choice is off: the service says what a role is.
    role = SelectField("Role", choices=choices(ROLES), validate_choice=False)
