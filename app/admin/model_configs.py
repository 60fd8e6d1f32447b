"""Admin pages for chat model configs (SPEC sections 6, 8 and 9): list (with who can use each),
create, edit (with "Who can use it: Everyone / Only members of" and a checkbox per group), set
default, delete behind a confirmation. Views are thin: each calls the model configs service and
renders or redirects; service errors appear next to their fields."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for

from app.admin import bp
from app.admin.model_config_forms import ModelConfigCreateForm, ModelConfigEditForm
from app.errors import DomainError, InvalidInput, NotFound
from app.models import AIProvider, ChatModelConfig
from app.pages import EmptyForm, admin_required, apply_error, choices, confirmed_post, current_actor, or_404, page_args
from app.services import access as access_rules
from app.services import groups as group_service
from app.services import model_configs as service
from app.services.base import Page
from app.services.providers import TYPE_LABELS


def _provider_label(config: ChatModelConfig, provider: AIProvider | None) -> str:
    if config.ai_provider_id is None:
        return f"{TYPE_LABELS.get(config.provider, config.provider)} (legacy)"
    if provider is None:
        return "Unknown provider"
    return provider.display_name or provider.name


@bp.route("/model-configs")
@admin_required
def list_model_configs():
    """Every live config, the default first, 50 a page."""
    page = page_args(per_page=50)
    rows, total = service.list_configs_with_providers(Page(limit=page.per_page, offset=page.offset))
    page.total = total
    groups = access_rules.groups_by_config([c.id for c, _ in rows if c.access == "groups"])
    items = [{"config": c, "provider": p, "provider_label": _provider_label(c, p), "groups": groups.get(c.id, [])}
             for c, p in rows]
    return render_template("admin/model_configs/list.html", items=items, total=total, page=page,
                           action_form=EmptyForm())


@bp.route("/model-configs/new", methods=["GET", "POST"])
@admin_required
def create_model_config():
    """GET shows the form; POST creates the config and goes back to the list."""
    form = ModelConfigCreateForm()
    providers = service.selectable_providers()
    form.ai_provider_id.choices = choices(
        [("", "Choose a provider…")]
        + [(str(p.id), f"{p.display_name or p.name} · {TYPE_LABELS.get(p.type, p.type)}") for p in providers])
    _group_choices(form)
    if form.validate_on_submit():
        fields = form.values()
        try:
            config = service.create_config(current_actor(), **fields)
        except DomainError as error:
            apply_error(form, error, "model")
        else:
            note = " It is the default model." if config.is_default else ""
            flash(f"Model {config.model} added.{note}", "success")
            return redirect(url_for("admin.list_model_configs"), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/model_configs/form.html", form=form, config=None, provider_label=None,
                           has_providers=bool(providers)), status


@bp.route("/model-configs/<config_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_model_config(config_id: str):
    """GET shows the form filled in; POST saves what changed. The provider cannot change. :raise 404:"""
    config, provider = or_404(service.get_config_with_provider, config_id)
    current_groups = service.group_ids_by_config([config]).get(config.id, [])
    form = ModelConfigEditForm(obj=config, group_ids=[str(g) for g in current_groups])
    _group_choices(form)
    if form.validate_on_submit():
        changes = form.values()
        try:
            service.update_config(current_actor(), config.id, changes)
        except NotFound:
            abort(404)
        except DomainError as error:
            apply_error(form, error, "model")
        else:
            flash("Changes saved.", "success")
            return redirect(url_for("admin.list_model_configs"), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/model_configs/form.html", form=form, config=config,
                           provider_label=_provider_label(config, provider), has_providers=True), status


def _group_choices(form: ModelConfigEditForm) -> None:
    """A checkbox per group, by name."""
    form.group_ids.choices = choices([(str(g.id), g.display_name or g.name) for g in group_service.all_groups()])


@bp.route("/model-configs/<config_id>/default", methods=["POST"])
@admin_required
def set_default_model_config(config_id: str):
    """Make the config the default (the previous default is unset). :raise 404:"""
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        config = service.set_default(current_actor(), config_id)
    except (InvalidInput, NotFound):
        abort(404)
    except DomainError as error:
        flash(error.message, "error")
    else:
        flash(f"{config.display_name or config.model} is now the default model.", "success")
    return redirect(url_for("admin.list_model_configs"), code=303)


@bp.route("/model-configs/<config_id>/delete", methods=["GET", "POST"])
@admin_required
def delete_model_config(config_id: str):
    """GET asks for confirmation; POST deletes. :raise 404:"""
    form = EmptyForm()
    if confirmed_post(form):
        try:
            service.delete_config(current_actor(), config_id)
        except InvalidInput:
            abort(404)
        except NotFound:
            flash("That model config was already deleted.", "info")
        else:
            flash("Model config deleted.", "success")
        return redirect(url_for("admin.list_model_configs"), code=303)
    config = or_404(service.get_config, config_id)
    return render_template("admin/model_configs/delete.html", config=config, form=form)
