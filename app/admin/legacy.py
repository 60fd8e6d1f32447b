"""Admin pages for legacy chat providers and their migration to AI providers (SPEC sections 6, 8).

Views are thin: each calls the legacy (or migration) service and renders or redirects. The
central key is taken in a password field that is never filled back in; saving redirects, so
neither the page nor the browser history holds it.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for

from app.admin import bp
from app.admin.legacy_forms import LegacyProviderCreateForm, LegacyProviderEditForm
from app.errors import DomainError, NotFound
from app.models import ChatProvider
from app.pages import EmptyForm, admin_required, apply_error, confirmed_post, current_actor, or_404
from app.services import legacy as service
from app.services.legacy_migration import MigrationStopped, is_migrated, migrate_legacy
from app.services.providers import POLICY_LABELS, TYPE_LABELS
from app.services.resolution import legacy_key_policy

LABELS = {"type_labels": TYPE_LABELS, "policy_labels": POLICY_LABELS}


def credential_words(provider: ChatProvider) -> str:
    """The credential flags in words."""
    if provider.central_api_key_enabled and not provider.allow_user_api_key:
        return "Central key only"
    if not provider.central_api_key_enabled:
        return "User keys only"
    if provider.allow_central_api_key_fallback:
        return "User keys, falling back to the central key"
    return "Central key and user keys, without fallback (users need their own key)"


def _list_url() -> str:
    return url_for("admin.list_legacy_providers")


@bp.route("/legacy-providers")
@admin_required
def list_legacy_providers():
    """Every legacy provider (one per type) with its credentials, user keys and migration state."""
    providers, total = service.list_providers()
    ids = [p.id for p in providers]
    return render_template(
        "admin/legacy/list.html", providers=providers, total=total,
        user_keys=service.user_key_counts(ids), migrated=is_migrated(ids),
        configs=service.legacy_config_counts([p.provider for p in providers]),
        words={p.id: credential_words(p) for p in providers},
        central_key_available=service.central_key_available,
        policies={p.id: legacy_key_policy(p) for p in providers},
        display_names={p.id: service.display_name(p) for p in providers}, **LABELS,
    )


@bp.route("/legacy-providers/new", methods=["GET", "POST"])
@admin_required
def create_legacy_provider():
    """GET shows the form; POST creates the provider and goes back to the list."""
    form = LegacyProviderCreateForm()
    if form.validate_on_submit():
        try:
            provider = service.create_provider(
                current_actor(), provider=form.provider.data, display_name=form.display_name.data,
                enabled=form.enabled.data, base_url=form.base_url.data, api_key=form.api_key.data or None,
                central_api_key_enabled=form.central_api_key_enabled.data,
                allow_user_api_key=form.allow_user_api_key.data,
                allow_central_api_key_fallback=form.allow_central_api_key_fallback.data,
            )
        except DomainError as error:
            apply_error(form, error, "provider")
        else:
            flash(f"Legacy provider {service.display_name(provider)} created.", "success")
            return redirect(_list_url(), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/legacy/form.html", form=form, provider=None, **LABELS), status


@bp.route("/legacy-providers/<provider_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_legacy_provider(provider_id: str):
    """GET shows the form filled in (never the key); POST saves it. The type cannot change. :raise 404:"""
    provider = or_404(service.get_provider, provider_id)
    form = LegacyProviderEditForm(obj=provider)
    if form.validate_on_submit():
        changes = {name: getattr(form, name).data for name in (
            "display_name", "base_url", "enabled", *service.FLAGS)}
        if form.api_key.data:
            changes["api_key"] = form.api_key.data
        elif form.remove_api_key.data:
            changes["api_key"] = None
        try:
            service.update_provider(current_actor(), provider.id, changes)
        except NotFound:
            abort(404)
        except DomainError as error:
            apply_error(form, error, "display_name")
        else:
            flash("Changes saved.", "success")
            return redirect(_list_url(), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/legacy/form.html", form=form, provider=provider, **LABELS), status


@bp.route("/legacy-providers/<provider_id>/delete", methods=["GET", "POST"])
@admin_required
def delete_legacy_provider(provider_id: str):
    """GET says what goes with the provider; POST deletes it. :raise 404:"""
    provider = or_404(service.get_provider, provider_id)
    form = EmptyForm()
    if confirmed_post(form):
        name = service.display_name(provider)
        removed = or_404(service.delete_provider, current_actor(), provider.id)
        flash(f"Legacy provider {name} deleted, with {removed} user key{'' if removed == 1 else 's'}.", "success")
        return redirect(_list_url(), code=303)
    return render_template(
        "admin/legacy/delete.html", provider=provider, form=form, display_name=service.display_name(provider),
        user_keys=service.user_key_counts([provider.id]).get(provider.id, 0),
        configs=service.legacy_config_counts([provider.provider]).get(provider.provider, 0),
        migrated=bool(is_migrated([provider.id])), **LABELS,
    )


@bp.route("/legacy-providers/migrate", methods=["GET", "POST"])
@admin_required
def migrate_legacy_providers():
    """GET shows what a migration would do (a dry run); POST runs it and flashes the summary."""
    form = EmptyForm()
    if confirmed_post(form):
        try:
            summary = migrate_legacy(current_actor())
        except MigrationStopped as stopped:
            flash(f"{stopped.summary.headline()} The migration stopped at {stopped.provider} because of an "
                  "unexpected error; that provider was left untouched. Try again.", "error")
        else:
            flash(summary.headline(), "error" if summary.failed else "success")
            for outcome in summary.failed:
                flash(f"{outcome.provider}: {outcome.reason}.", "error")
        return redirect(_list_url(), code=303)
    summary = migrate_legacy(current_actor(), dry_run=True)
    return render_template("admin/legacy/migrate.html", summary=summary, form=form, **LABELS)
