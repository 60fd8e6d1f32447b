from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from app.pages import choices


class UserCreateForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    name = StringField("Name", validators=[Optional(), Length(max=128)])
    password = PasswordField("Initial password", validators=[DataRequired(), Length(max=1024)],
                             description="At least 12 characters. Share it with the user privately.")
    role = SelectField("Role", choices=choices([("member", "Member"), ("admin", "Administrator")]), default="member")


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET filter, changes nothing

    actor = StringField("Actor", validators=[Optional(), Length(max=254)])
    action = StringField("Action", validators=[Optional(), Length(max=64)])
    resource_type = StringField("Resource type", validators=[Optional(), Length(max=64)])
    resource_id = StringField("Resource id", validators=[Optional(), Length(max=64)])
