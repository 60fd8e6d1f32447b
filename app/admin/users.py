from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for

from app.admin import bp
from app.admin.forms import UserCreateForm
from app.admin.group_forms import ROLES, RoleForm
from app.errors import DomainError, InvalidInput, NotFound
from app.pages import EmptyForm, admin_required, apply_error, confirmed_post, current_actor, or_404, page_args
from app.services import groups as group_service
from app.services import users as user_service
from app.services.base import Page, parse_uuid


@bp.route("/users")
@admin_required
def list_users():
    return _render_list(UserCreateForm())


def _render_list(form: UserCreateForm, status: int = 200):
    """The users page (a page of users with their key counts, groups and a role form) with the
    create form."""
    page = page_args()
    users, total = user_service.list_users(Page(limit=page.per_page, offset=page.offset))
    page.total = total
    ids = [u.id for u in users]
    return render_template("admin/users.html", users=users, total=total, page=page,
                           key_counts=user_service.key_counts_by_user(ids), groups=group_service.groups_by_user(ids),
                           form=form, roles=ROLES, action_form=EmptyForm()), status


@bp.route("/users", methods=["POST"])
@admin_required
def create_user():
    form = UserCreateForm()
    if form.validate_on_submit():
        try:
            user = user_service.create_user(current_actor(), form.email.data, form.name.data or "",
                                            form.password.data, form.role.data)
        except DomainError as error:
            apply_error(form, error, "email")
        else:
            flash(f"User {user.email} created.", "success")
            return redirect(url_for("admin.list_users"))
    return _render_list(form, 400)


@bp.route("/users/<user_id>/deactivate", methods=["GET", "POST"])
@admin_required
def deactivate_user(user_id: str):
    """GET asks for confirmation; POST deactivates. :raise 404: unknown user."""
    user = or_404(lambda: user_service.get_user(parse_uuid(user_id)))
    form = EmptyForm()
    if confirmed_post(form):
        try:
            user_service.deactivate_user(current_actor(), user.id)
        except DomainError as error:
            flash(error.message, "error")
        else:
            flash(f"{user.email} was deactivated. Their sessions, tokens and keys are gone.", "success")
        return redirect(url_for("admin.list_users"))
    key_count = user_service.key_counts_by_user([user.id]).get(user.id, 0)
    return render_template("admin/user_deactivate.html", user=user, form=form, key_count=key_count)


@bp.route("/users/<user_id>/role", methods=["POST"])
@admin_required
def change_user_role(user_id: str):
    """Change a user's role; their sessions end so it applies at once. The last active
    administrator keeps the role (a flashed error, nothing changed). :raise 404: unknown user."""
    form = RoleForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        user = user_service.set_role(current_actor(), parse_uuid(user_id), form.role.data)
    except (NotFound, InvalidInput) as error:
        if error.field != "role":
            abort(404)
        flash(error.message, "error")
    except DomainError as error:
        flash(error.message, "error")
    else:
        label = "an administrator" if user.role == "admin" else "a member"
        flash(f"{user.email} is now {label}.", "success")
    return redirect(url_for("admin.list_users"), code=303)
