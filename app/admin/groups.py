"""Admin pages for groups and their members (SPEC section 9): list, create, edit, delete behind
a confirmation that names the model configs it leaves open to no one, and a group page with its
members (add by email, remove behind a confirmation, the source shown). Views are thin: each
calls the groups service and renders or redirects; service errors appear next to their fields."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for

from app.admin import bp
from app.admin.group_forms import GroupForm, MemberAddForm
from app.errors import DomainError, InvalidInput, NotFound
from app.models import Group
from app.pages import EmptyForm, admin_required, apply_error, confirmed_post, current_actor, or_404, page_args
from app.services import groups as service
from app.services.base import Page

MEMBERS_PER_PAGE = 50


def _detail_url(group_id, anchor: str = "") -> str:
    return url_for("admin.group_detail", group_id=group_id) + anchor


@bp.route("/groups")
@admin_required
def list_groups():
    """Every group by name, 50 a page, with its member and open-config counts."""
    page = page_args(per_page=50)
    groups, total = service.list_groups(Page(limit=page.per_page, offset=page.offset))
    page.total = total
    return render_template("admin/groups/list.html", groups=groups, total=total, page=page,
                           facts=service.group_facts([g.id for g in groups]), empty_facts=service.GroupFacts())


@bp.route("/groups/new", methods=["GET", "POST"])
@admin_required
def create_group():
    """GET shows the form; POST creates the group and goes to its page to add members."""
    form = GroupForm()
    if form.validate_on_submit():
        fields = {name: getattr(form, name).data for name in GroupForm.FIELDS}
        try:
            group = service.create_group(current_actor(), **fields)
        except DomainError as error:
            _show_errors(form, error, fields)
        else:
            flash(f"Group {group.name} created. Add its members, then open models to it.", "success")
            return redirect(_detail_url(group.id, "#members"), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/groups/form.html", form=form, group=None), status


@bp.route("/groups/<group_id>")
@admin_required
def group_detail(group_id: str):
    """The group, its members (by email, 50 a page, the source shown) and the models open to it. :raise 404:"""
    return _render_detail(or_404(service.get_group, group_id), MemberAddForm())


def _render_detail(group: Group, member_form: MemberAddForm, status: int = 200):
    page = page_args(per_page=MEMBERS_PER_PAGE)
    members, total = service.page_members(group.id, Page(limit=page.per_page, offset=page.offset))
    page.total = total
    return render_template("admin/groups/detail.html", group=group, members=members, total=total, page=page,
                           configs=service.configs_open_to(group.id), member_form=member_form), status


@bp.route("/groups/<group_id>/members", methods=["POST"])
@admin_required
def add_group_member(group_id: str):
    """Add the active user with this email as a `manual` member. Errors re-render the page. :raise 404:"""
    group = or_404(service.get_group, group_id)
    form = MemberAddForm()
    if form.validate_on_submit():
        try:
            member = service.add_member_by_email(current_actor(), group.id, form.email.data)
        except NotFound as error:
            if error.message == service.GROUP_NOT_FOUND:
                abort(404)
            apply_error(form, error, "email")
        except DomainError as error:
            apply_error(form, error, "email")
        else:
            flash(f"{member.email} is a member of {group.name}.", "success")
            return redirect(_detail_url(group.id, "#members"), code=303)
    return _render_detail(group, form, 400)


@bp.route("/groups/<group_id>/members/<user_id>/remove", methods=["GET", "POST"])
@admin_required
def remove_group_member(group_id: str, user_id: str):
    """GET asks for confirmation; POST removes the membership (whatever its source). :raise 404:"""
    group = or_404(service.get_group, group_id)
    form = EmptyForm()
    if confirmed_post(form):
        try:
            removed = service.remove_member(current_actor(), group.id, user_id)
        except (InvalidInput, NotFound):
            abort(404)
        if removed:
            flash(f"Removed from {group.name}.", "success")
        else:
            flash("That user was no longer a member; nothing changed.", "info")
        return redirect(_detail_url(group.id, "#members"), code=303)
    member = or_404(service.get_member, group.id, user_id)
    return render_template("admin/groups/member_remove.html", group=group, member=member, form=form)


@bp.route("/groups/<group_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_group(group_id: str):
    """GET shows the form filled in; POST saves what changed. :raise 404:"""
    group = or_404(service.get_group, group_id)
    form = GroupForm(obj=group)
    if form.validate_on_submit():
        changes = {name: getattr(form, name).data for name in GroupForm.FIELDS}
        try:
            service.update_group(current_actor(), group.id, changes)
        except NotFound:
            abort(404)
        except DomainError as error:
            _show_errors(form, error, changes)
        else:
            flash("Changes saved.", "success")
            return redirect(_detail_url(group.id), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/groups/form.html", form=form, group=group), status


@bp.route("/groups/<group_id>/delete", methods=["GET", "POST"])
@admin_required
def delete_group(group_id: str):
    """GET names what the deletion changes (members, and the models left open to no one); POST
    deletes the group. :raise 404:"""
    group = or_404(service.get_group, group_id)
    form = EmptyForm()
    if confirmed_post(form):
        deleted = or_404(service.delete_group, current_actor(), group.id)
        closed = len(deleted.closed_configs)
        note = (f" {closed} model{'' if closed == 1 else 's'} open to it alone {'is' if closed == 1 else 'are'} "
                "now open to no one." if closed else "")
        flash(f"Group {group.name} deleted.{note}", "success")
        return redirect(url_for("admin.list_groups"), code=303)
    facts = service.group_facts([group.id]).get(group.id, service.GroupFacts())
    return render_template("admin/groups/delete.html", group=group, facts=facts, form=form,
                           closed=service.configs_closed_by_deleting(group.id))


def _show_errors(form: GroupForm, error: DomainError, fields: dict) -> None:
    """The service's error next to its field, and any other field the service would refuse too."""
    apply_error(form, error, "name")
    if isinstance(error, InvalidInput):
        for other in service.field_errors(fields):
            if other.field != error.field:
                apply_error(form, other, "name")
