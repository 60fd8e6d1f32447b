"""Admin pages that call out to a provider: test one of its keys, list the models it serves.

Both count against the caller's budget of provider calls (`app/ratelimits.py`, shared with the
JSON API). A test redirects back to the provider page with the result flashed. Discovery never
runs on a GET (SPEC section 6a): its page shows a Discover models button (a POST with CSRF), and
the answer lists the models with a "Create config" action per model not configured yet.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for

from app.admin import bp
from app.errors import DomainError, InvalidInput, NotFound
from app.pages import EmptyForm, admin_required, current_actor, flash_key_test
from app.services import key_testing, model_configs
from app.services import providers as provider_service


@bp.route("/providers/<provider_id>/keys/<key_id>/test", methods=["POST"])
@admin_required
def test_provider_key(provider_id: str, key_id: str):
    """Test one shared key and go back to the provider page with the result.

    :raise 400: no CSRF token. :raise 404: malformed id, unknown provider or key.
    """
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        outcome = key_testing.test_provider_key(current_actor(), provider_id, key_id)
    except (NotFound, InvalidInput) as error:
        if isinstance(error, NotFound) or error.validations:  # not found, or a malformed id
            abort(404)
        flash(f"{error.message} {error.detail or ''}".strip(), "error")
    except DomainError as error:
        flash(error.message, "error")
    else:
        flash_key_test(outcome, f"Key {outcome.key_hint}")
    return redirect(url_for("admin.provider_detail", provider_id=provider_id, _anchor="keys"), code=303)


MODELS_LISTED_MAX = 2000  # model ids carried back by the "Create config" form (a provider lists a few hundred)


@bp.route("/providers/<provider_id>/discover")
@admin_required
def discover_models(provider_id: str):
    """The discovery page: a Discover models button. Calls nothing (a link followed, a prefetch
    or a crawler must not reach the provider). :raise 404: malformed id or unknown provider."""
    return _render_discovery(_provider_or_404(provider_id), models=None)


@bp.route("/providers/<provider_id>/discover", methods=["POST"])
@admin_required
def run_discovery(provider_id: str):
    """Ask the provider which models it serves (with its oldest key) and list them.

    :raise 400: no CSRF token. :raise 404: malformed id or unknown provider.
    """
    if not EmptyForm().validate_on_submit():
        abort(400)
    provider = _provider_or_404(provider_id)
    try:
        models = key_testing.discover_models(current_actor(), provider.id)
    except (InvalidInput, key_testing.ProviderCallFailed) as failure:
        return _render_discovery(provider, models=[], error=failure)
    return _render_discovery(provider, models=models)


@bp.route("/providers/<provider_id>/discover/config", methods=["POST"])
@admin_required
def create_discovered_config(provider_id: str):
    """Create a model config, with default settings, for a model picked from the list, and show
    the list again from the ids the form carried back (no second call to the provider).

    :raise 400: no CSRF token. :raise 404: malformed id or unknown provider.
    """
    if not EmptyForm().validate_on_submit():
        abort(400)
    provider = _provider_or_404(provider_id)
    try:
        config = model_configs.create_config(current_actor(), ai_provider_id=provider.id,
                                             model=request.form.get("model", ""))
    except DomainError as error:
        flash(f"{error.message} {error.detail or ''}".strip(), "error")
    else:
        flash(f"Model config “{config.model}” created on {provider.name} with default settings.", "success")
    listed = [m for m in request.form.getlist("listed")[:MODELS_LISTED_MAX] if m]
    return _render_discovery(provider, models=listed)


def _provider_or_404(provider_id: str):
    try:
        return provider_service.get_provider(provider_id)
    except (InvalidInput, NotFound):
        abort(404)


def _render_discovery(provider, *, models: list[str] | None, error: DomainError | None = None):
    """The page: the button, and the models when a discovery ran (`models` None: not yet)."""
    status = 200 if error is None else error.status
    return render_template(
        "admin/key_tests/discover.html", provider=provider, models=models, error=error,
        configured=key_testing.configured_models(provider.id), form=EmptyForm(),
        type_label=provider_service.TYPE_LABELS.get(provider.type, provider.type),
        testable=key_testing.supports_testing(provider.type),
    ), status
