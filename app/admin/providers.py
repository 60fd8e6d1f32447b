"""Admin pages for AI providers and their keys (SPEC sections 4 and 8).

Views are thin: each calls the providers service and renders or redirects. Keys are taken in a
password field that is never filled back in; a saved key is followed by a redirect, so neither
the page nor the browser history ever holds it.
"""

from __future__ import annotations

import uuid

from flask import abort, flash, redirect, render_template, url_for

from app.admin import bp
from app.admin.provider_forms import ProviderCreateForm, ProviderEditForm, ProviderKeyForm
from app.errors import DomainError, InvalidInput, NotFound
from app.models import AIProvider
from app.pages import EmptyForm, admin_required, apply_error, confirmed_post, current_actor, or_404, page_args
from app.services import key_health, key_testing, provider_keys, user_keys
from app.services import providers as service
from app.services.base import Page

LABELS = {"type_labels": service.TYPE_LABELS, "policy_labels": service.POLICY_LABELS,
          "result_labels": key_health.RESULT_LABELS,
          "relies_on_shared_key": service.relies_on_shared_key}
KEY_HOLDERS_SHOWN = 50  # users listed with their own key on a provider's page (the count is exact)


def _facts(provider: AIProvider) -> service.ProviderFacts:
    return service.provider_facts([provider.id]).get(provider.id, service.ProviderFacts())


def _detail_url(provider_id: uuid.UUID | str, anchor: str = "") -> str:
    return url_for("admin.provider_detail", provider_id=provider_id) + anchor


@bp.route("/providers")
@admin_required
def list_providers():
    """Live providers by name, 50 a page, with key, user-key and model counts."""
    page = page_args(per_page=50)
    providers, total = service.list_providers(Page(limit=page.per_page, offset=page.offset))
    page.total = total
    facts = service.provider_facts([p.id for p in providers])
    return render_template("admin/providers/list.html", providers=providers, facts=facts, page=page,
                           total=total, empty_facts=service.ProviderFacts(), **LABELS)


@bp.route("/providers/new", methods=["GET", "POST"])
@admin_required
def create_provider():
    """GET shows the form; POST creates the provider and goes to its page to add a key."""
    form = ProviderCreateForm()
    if form.validate_on_submit():
        fields = {name: getattr(form, name).data for name in ("type", *service.UPDATABLE)}
        try:
            provider = service.create_provider(current_actor(), **fields)
        except DomainError as error:
            _show_errors(form, error, fields)
        else:
            flash(f"Provider {provider.name} created. Add an API key so it can serve requests.", "success")
            return redirect(_detail_url(provider.id, "#keys"), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/providers/form.html", form=form, provider=None, **LABELS), status


@bp.route("/providers/<provider_id>")
@admin_required
def provider_detail(provider_id: str):
    """The provider's settings, its keys (hints only), what depends on it and who holds a key of
    their own. :raise 404:"""
    return _render_detail(or_404(service.get_provider, provider_id), ProviderKeyForm())


def _render_detail(provider: AIProvider, key_form: ProviderKeyForm, status: int = 200):
    """The page: keys (the one in use marked), what depends on it, and who holds a key of their own
    (email, name and when they saved it; never the key or its hint)."""
    keys = provider_keys.list_keys(provider.id)
    in_use = provider_keys.serving_key(provider.id)
    return render_template("admin/providers/detail.html", provider=provider, keys=keys, facts=_facts(provider),
                           in_use_key_id=in_use.id if in_use else None, health=key_health.health_of,
                           testable=key_testing.supports_testing(provider.type),
                           holders=user_keys.user_key_holders(provider.id, limit=KEY_HOLDERS_SHOWN),
                           key_form=key_form, byok_enabled=service.byok_enabled(provider), **LABELS), status


@bp.route("/providers/<provider_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_provider(provider_id: str):
    """GET shows the form filled in; POST saves what changed. The type cannot change. :raise 404:"""
    provider = or_404(service.get_provider, provider_id)
    form = ProviderEditForm(obj=provider)
    if form.validate_on_submit():
        changes = {name: getattr(form, name).data for name in service.UPDATABLE}
        try:
            service.update_provider(current_actor(), provider.id, changes)
        except NotFound:
            abort(404)
        except DomainError as error:
            _show_errors(form, error, changes, current_name=provider.name)
        else:
            flash("Changes saved.", "success")
            return redirect(_detail_url(provider.id), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/providers/form.html", form=form, provider=provider, **LABELS), status


@bp.route("/providers/<provider_id>/delete", methods=["GET", "POST"])
@admin_required
def delete_provider(provider_id: str):
    """GET says what goes with the provider; POST deletes it. :raise 404:"""
    provider = or_404(service.get_provider, provider_id)
    form = EmptyForm()
    if confirmed_post(form):
        removed = or_404(service.delete_provider, current_actor(), provider.id)
        flash(f"Provider {provider.name} deleted, with {_count(removed['keys'], 'shared key')}, "
              f"{_count(removed['user_keys'], 'user key')} and {_count(removed['model_configs'], 'model config')}.",
              "success")
        return redirect(url_for("admin.list_providers"), code=303)
    return render_template("admin/providers/delete.html", provider=provider, facts=_facts(provider), form=form,
                           **LABELS)


@bp.route("/providers/<provider_id>/keys", methods=["POST"])
@admin_required
def add_provider_key(provider_id: str):
    """Store a key, then redirect (the key is never echoed). Errors re-render the page with an
    empty key field. :raise 404:"""
    provider = or_404(service.get_provider, provider_id)
    form = ProviderKeyForm()
    if form.validate_on_submit():
        try:
            key = provider_keys.add_key(current_actor(), provider.id, form.api_key.data)
        except NotFound:
            abort(404)
        except DomainError as error:
            apply_error(form, error, "api_key")
        else:
            flash(f"Key {key.hint} saved. It is stored encrypted and will not be shown again.", "success")
            return redirect(_detail_url(provider.id, "#keys"), code=303)
    form.api_key.data = ""
    return _render_detail(provider, form, 400)


@bp.route("/providers/<provider_id>/keys/<key_id>/delete", methods=["GET", "POST"])
@admin_required
def delete_provider_key(provider_id: str, key_id: str):
    """GET asks for confirmation; POST deletes the key. :raise 404: unknown provider or key."""
    form = EmptyForm()
    if confirmed_post(form):
        try:
            provider_keys.delete_key(current_actor(), provider_id, key_id)
        except InvalidInput:
            abort(404)
        except NotFound as error:
            if error.message != provider_keys.KEY_NOT_FOUND:
                abort(404)
            flash("That key no longer exists here; nothing was deleted.", "info")
        else:
            flash("Key deleted. Its encrypted copy is gone from the database.", "success")
        return redirect(_detail_url(provider_id, "#keys"), code=303)
    key = or_404(provider_keys.get_key, provider_id, key_id)
    provider = service.get_provider(key.provider_id)
    keys = provider_keys.list_keys(provider.id)
    return render_template("admin/providers/key_delete.html", provider=provider, key=key, form=form,
                           key_count=len(keys), in_use=keys[0].id == key.id, **LABELS)


def _show_errors(form, error: DomainError, fields: dict, current_name: str | None = None) -> None:
    """Put the service's error next to its field, and any other field the service would refuse too."""
    apply_error(form, error, "name")
    if isinstance(error, InvalidInput):
        for other in service.field_errors(fields, current_name=current_name):
            if other.field != error.field:
                apply_error(form, other, "name")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
