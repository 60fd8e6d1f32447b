from flask_wtf import FlaskForm


class EmptyForm(FlaskForm):
    """A form with only its CSRF token: for POST-only buttons (logout, delete, revoke)."""


def choices(pairs):
    """WTForms select options from (value, label) pairs."""
    from wtforms import SelectChoice

    return [SelectChoice(value, label) for value, label in pairs]
