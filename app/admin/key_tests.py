"""Admin pages that call out to a provider: test one of its keys, list the models it serves.

Both count against the caller's budget of provider calls (`app/ratelimits.py`, shared with the
JSON API). A test redirects back to the provider page with the result flashed; discovery renders
the model list with a "Create config" action per model not configured yet.
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


@bp.route("/providers/<provider_id>/discover")
@admin_required
def discover_models(provider_id: str):
    """Ask the provider which models it serves (with its oldest key) and list them.

    :raise 404: malformed id or unknown provider.
    """
    try:
        provider = provider_service.get_provider(provider_id)
    except (InvalidInput, NotFound):
        abort(404)
    models: list[str] = []
    error: DomainError | None = None
    try:
        models = key_testing.discover_models(current_actor(), provider.id)
    except (InvalidInput, key_testing.ProviderCallFailed) as failure:
        error = failure
    status = 200 if error is None else error.status
    return render_template(
        "admin/key_tests/discover.html", provider=provider, models=models, error=error,
        configured=key_testing.configured_models(provider.id), form=EmptyForm(),
        type_label=provider_service.TYPE_LABELS.get(provider.type, provider.type),
    ), status


@bp.route("/providers/<provider_id>/discover", methods=["POST"])
@admin_required
def create_discovered_config(provider_id: str):
    """Create a model config, with default settings, for a model picked on the discover page.

    :raise 400: no CSRF token. :raise 404: malformed id or unknown provider.
    """
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        provider = provider_service.get_provider(provider_id)
    except (InvalidInput, NotFound):
        abort(404)
    try:
        config = model_configs.create_config(current_actor(), ai_provider_id=provider.id,
                                             model=request.form.get("model", ""))
    except DomainError as error:
        flash(f"{error.message} {error.detail or ''}".strip(), "error")
    else:
        flash(f"Model config “{config.model}” created on {provider.name} with default settings.", "success")
    return redirect(url_for("admin.discover_models", provider_id=provider.id), code=303)
