"""Forms of the model config pages: shape only (numbers are numbers, options are JSON). Every
rule (ranges, required model, providers, duplicates) is the service's, and its errors are placed
next to these fields with `apply_error`."""

from __future__ import annotations

import json

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, RadioField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput, ListWidget

from app.pages import choices

MODEL_HELP = "The provider's model id, e.g. gpt-4o or claude-sonnet-4. Each provider can list a model once."
DISPLAY_NAME_HELP = "What people see in model pickers. Leave empty to show the model id."
CONTEXT_LIMIT_HELP = "How many tokens of conversation the model accepts. A whole number above 0."
COMPRESSION_HELP = "When the conversation fills this share of the context (0 to 100), older turns are summarised."
OPTIONS_HELP = 'A JSON object passed along with every request, e.g. {"temperature": 0.2}. Leave empty for none.'
ENABLED_HELP = "A disabled model keeps its settings but nobody can pick it."
PROVIDER_HELP = "Only enabled providers are listed. Cannot be changed later."
ACCESS_HELP = ("Only members of the groups you check may use it (administrators too). With no group checked, "
               "nobody can use it until you check one.")
ACCESS_CHOICES = (("everyone", "Everyone"), ("groups", "Only members of"))


class JSONObjectField(TextAreaField):
    """A textarea holding JSON: parsed on submit (invalid JSON is a field error), shown indented.

    Whether the value is an object is the service's rule, so it is not checked here.
    """

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        return json.dumps(self.data if self.data is not None else {}, indent=2, sort_keys=True)

    def process_formdata(self, valuelist: list[str]) -> None:
        if not valuelist:
            return
        text = valuelist[0].strip()
        if not text:
            self.data = {}
            return
        try:
            self.data = json.loads(text)
        except ValueError:
            self.data = None
            raise ValueError("Options must be valid JSON.") from None


class ModelConfigEditForm(FlaskForm):
    model = StringField("Model", description=MODEL_HELP)
    display_name = StringField("Display name", description=DISPLAY_NAME_HELP)
    context_limit = IntegerField("Context limit (tokens)", default=128000, validators=[Optional()],
                                 description=CONTEXT_LIMIT_HELP)
    compression_threshold = IntegerField("Compression threshold (%)", default=70, validators=[Optional()],
                                         description=COMPRESSION_HELP)
    options = JSONObjectField("Options (JSON)", default=dict, description=OPTIONS_HELP)
    enabled = BooleanField("Enabled", default=True, description=ENABLED_HELP)
    # validate_choice is off: the service says what an access mode is and which groups exist.
    access = RadioField("Who can use it", choices=choices(ACCESS_CHOICES), default="everyone", validate_choice=False,
                        description=ACCESS_HELP)
    group_ids = SelectMultipleField("Groups", choices=[], validate_choice=False, widget=ListWidget(prefix_label=False),
                                    option_widget=CheckboxInput())

    FIELDS = ("model", "display_name", "context_limit", "compression_threshold", "options", "enabled", "access",
              "group_ids")

    def values(self) -> dict:
        """The fields as the service takes them. The group checkboxes count only under "Only
        members of": boxes left checked while "Everyone" is chosen are not sent."""
        values = {name: getattr(self, name).data for name in self.FIELDS}
        if values["access"] != "groups":
            values["group_ids"] = []
        return values


class ModelConfigCreateForm(ModelConfigEditForm):
    # validate_choice is off: the service says whether the provider exists and is enabled.
    ai_provider_id = SelectField("AI provider", validate_choice=False, description=PROVIDER_HELP)
    is_default = BooleanField("Make this the default model",
                              description="The first model you add becomes the default anyway.")

    FIELDS = ("ai_provider_id", *ModelConfigEditForm.FIELDS, "is_default")
