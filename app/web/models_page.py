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
        case "model_not_allowed":
            return "This model is open only to members of some groups. Ask an administrator."
    return "This model is not available right now."


@bp.route("/models")
@login_required
def models():
    """Every model of the signed-in user's enabled set (only models open to them) with its
    resolution for them."""
    rows = models_for(current_user._get_current_object())
    usable = [(c, r) for c, r in rows if r.available]
    blocked = [(c, r, explain(r)) for c, r in rows if not r.available]
    return render_template("web/models.html", usable=usable, blocked=blocked, key_labels=KEY_SOURCE_LABELS)
