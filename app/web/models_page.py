"""The /models page: the models the signed-in user can use now, whose key serves each, and
why the others are not available to them, in words."""

from __future__ import annotations

from flask import render_template
from flask_login import current_user, login_required

from app.services.resolution import Resolution, models_for
from app.web import bp

KEY_SOURCE_LABELS = {"user": "Your key", "provider": "Shared key"}


def explain(resolution: Resolution) -> str:
    """Why a model is not available to the user, and what would change that."""
    provider = resolution.provider.display_name if resolution.provider else "its provider"
    legacy = resolution.provider is not None and resolution.provider.legacy
    match resolution.reason:
        case "user_api_key_required" if resolution.user_key_refused_at and not legacy:
            return (f"Key refused: {provider} refused your key on {_day(resolution.user_key_refused_at)}. "
                    "Save a new one in Settings → My keys to use this model.")
        case "user_api_key_required" if resolution.user_key_refused_at:
            return (f"Key refused: {provider} refused your key on {_day(resolution.user_key_refused_at)}. "
                    "Ask an administrator where to add a new one.")
        case "provider_keys_failing":
            return (f"Key refused: {provider} refused the shared key on {_day(resolution.shared_keys_refused_at)}. "
                    "Ask an administrator to add a working one.")
        case "user_api_key_required" if legacy:
            return f"This model needs your own {provider} key. Ask an administrator where to add it."
        case "user_api_key_required":
            return f"Add your own {provider} key in Settings → My keys to use this model."
        case "missing_api_key":
            return f"No shared {provider} key is set up yet. Ask an administrator to add one."
        case "byok_disabled":
            return f"This model needs your own {provider} key, but user keys are turned off on this server."
        case "provider_disabled":
            return f"{provider} is turned off by an administrator."
        case "model_disabled":
            return "An administrator turned this model off."
    return "This model is not available right now."


def note(resolution: Resolution) -> str | None:
    """What to know about a model that works: the shared key serves because the user's was refused."""
    if resolution.available and resolution.user_key_refused_at:
        return f"Key refused: your key was refused on {_day(resolution.user_key_refused_at)}; the shared key is used."
    return None


def _day(moment) -> str:
    return moment.strftime("%Y-%m-%d") if moment else "an earlier day"


@bp.route("/models")
@login_required
def models():
    """Every model of the signed-in user's enabled set (only models open to them) with its
    resolution for them."""
    rows = models_for(current_user._get_current_object())
    usable = [(c, r, note(r)) for c, r in rows if r.available]
    blocked = [(c, r, explain(r)) for c, r in rows if not r.available]
    return render_template("web/models.html", usable=usable, blocked=blocked, key_labels=KEY_SOURCE_LABELS)
