"""The caller's own provider keys: /settings/keys, one card per provider.

Each card says which key serves the user now (a badge and a sentence), takes a new key in a
password field that is never filled in, and offers removal behind a confirmation page.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import login_required

from app.errors import DomainError
from app.pages import EmptyForm, apply_error, current_actor
from app.services import key_health, user_keys
from app.services.base import byok_allowed, parse_uuid
from app.services.key_testing import supports_testing
from app.services.providers import TYPE_LABELS
from app.services.user_keys import UserKeyConfig
from app.settings import bp
from app.settings.key_forms import UserKeyForm

KEY_SAVED = "Key saved"
USING_SHARED_KEY = "Using shared key"
NO_KEY = "No key"
USER_KEYS_DISABLED = "User keys disabled"
KEY_REFUSED = "Key refused"


@dataclass
class KeyCard:
    config: UserKeyConfig
    badge: str
    badge_class: str
    status: str
    form: UserKeyForm

    @property
    def can_save(self) -> bool:
        return self.config.byok_enabled and self.config.provider.enabled

    @property
    def can_test(self) -> bool:
        """A saved key that is used can be sent to the provider, if its type can be tested."""
        return self.config.has_user_api_key and self.can_save and supports_testing(self.config.provider.type)


def describe(config: UserKeyConfig) -> tuple[str, str, str]:
    """The card's badge, its CSS class and a sentence saying what happens now."""
    provider, source = config.provider, config.key_source
    if not config.byok_enabled:
        if not provider.enabled:
            status = "This provider is turned off by your administrator."
        elif source == "provider":
            status = "User keys are turned off; the shared key is used."
        elif provider.key_policy == "user_only":
            status = "User keys are turned off and this provider needs one: it cannot be used right now."
        else:
            status = "User keys are turned off and there is no shared key: this provider cannot be used right now."
        if config.has_user_api_key:
            status += " Your saved key is not used; you can remove it."
        return USER_KEYS_DISABLED, "badge-off", status
    if config.key_refused:
        refused = f"The provider refused your key on {config.key_last_tested_at:%Y-%m-%d}"
        if source == "provider":
            return KEY_REFUSED, "badge-danger", f"{refused}: the shared key is used until you save a new one."
        return KEY_REFUSED, "badge-danger", f"{refused}: save a new one to use this provider."
    if config.has_user_api_key:
        if not provider.enabled:
            return KEY_SAVED, "badge-ok", "This provider is turned off by your administrator; your key is kept but not used."
        return KEY_SAVED, "badge-ok", "Your key is used."
    if not provider.enabled:
        return NO_KEY, "badge-warn", "This provider is turned off by your administrator."
    if source == "provider":
        return USING_SHARED_KEY, "badge-neutral", "The shared key is used; add yours to use your own."
    if provider.key_policy == "user_only":
        return NO_KEY, "badge-warn", "This provider needs your own key: add yours to use it."
    if config.has_provider_api_key:
        return NO_KEY, "badge-warn", "The provider refused the shared key: add yours to use this provider."
    return NO_KEY, "badge-warn", "No key is available: add yours to use this provider."


def fallback(config: UserKeyConfig) -> str:
    """What serves the user once their key is gone."""
    if config.key_source != "user":
        return "Your key is not used at the moment, so nothing changes for you right now."
    if config.fallback_source == "provider":
        return "The shared key of your organisation will be used instead."
    if config.provider.key_policy == "user_only":
        return "This provider needs your own key: you will not be able to use it until you add one again."
    return "There is no shared key: you will not be able to use this provider until you add a key again."


def provider_label(config: UserKeyConfig) -> str:
    return config.provider.display_name or config.provider.name


def _card(config: UserKeyConfig, form: UserKeyForm | None = None) -> KeyCard:
    form = form or UserKeyForm(formdata=None)
    form.api_key.id = f"api-key-{config.provider.id}"  # one form per card: ids must stay unique
    return KeyCard(config, *describe(config), form=form)


def _render(posted: tuple[str, UserKeyForm] | None = None, status: int = 200):
    configs, _ = user_keys.list_user_keys(current_actor(), include_unusable=True)
    posted_id, posted_form = posted or (None, None)
    cards = [_card(c, posted_form if str(c.provider.id) == posted_id else None) for c in configs]
    if posted_form is not None and not any(str(c.provider.id) == posted_id for c in configs):
        # No card for this provider (gone, or not open to user keys): say why at the top.
        for message in posted_form.api_key.errors:
            flash(message, "error")
    return render_template("settings/keys.html", cards=cards, type_labels=TYPE_LABELS,
                           result_labels=key_health.RESULT_LABELS,
                           byok_allowed=byok_allowed()), status


@bp.route("/keys")
@login_required
def keys():
    return _render()


@bp.route("/keys/<provider_id>", methods=["POST"])
@login_required
def save_key(provider_id: str):
    """Save the caller's key, then redirect back (PRG); errors are shown next to the card's field."""
    try:
        pid = str(parse_uuid(provider_id))
    except DomainError:
        abort(404)
    form = UserKeyForm()
    if not form.validate_on_submit():
        return _render((pid, form), 400)
    try:
        config = user_keys.upsert_user_key(current_actor(), pid, form.api_key.data)
    except DomainError as error:
        apply_error(form, error, "api_key")
        return _render((pid, form), error.status)
    flash(f"Your key for {provider_label(config)} was saved ({config.hint}). {describe(config)[2]}", "success")
    return redirect(url_for("settings.keys") + f"#provider-{pid}")


@bp.route("/keys/<provider_id>/remove", methods=["GET", "POST"])
@login_required
def remove_key(provider_id: str):
    """GET asks for confirmation and says what the user falls back to; POST removes the key.

    :raise 404: malformed id or no live provider.
    """
    try:
        config = user_keys.get_user_key_config(current_actor(), provider_id)
    except DomainError:
        abort(404)
    form = EmptyForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        if user_keys.delete_user_key(current_actor(), config.provider.id):
            flash(f"Your key for {provider_label(config)} was removed. {fallback(config)}", "success")
        else:
            flash(f"You had no key saved for {provider_label(config)}.", "info")
        return redirect(url_for("settings.keys"))
    if not config.has_user_api_key:
        flash(f"You have no key saved for {provider_label(config)}.", "info")
        return redirect(url_for("settings.keys"))
    return render_template("settings/key_remove.html", config=config, label=provider_label(config),
                           fallback=fallback(config), form=form)
