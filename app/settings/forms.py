from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional


class TokenCreateForm(FlaskForm):
    name = StringField("Token name", validators=[Optional(), Length(max=128)],
                       description="A name to recognise it by, e.g. the machine that uses it.")


class PasswordChangeForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)],
                                 description="At least 12 characters. Your other sessions will be signed out.")
    confirm = PasswordField("Repeat new password", validators=[DataRequired(), EqualTo("new_password", "The passwords do not match.")])
