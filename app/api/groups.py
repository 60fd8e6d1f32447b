"""JSON routes for groups and their members (SPEC section 9). Admins only.

Each view parses, calls one service function and shapes the answer; every rule and every error
message lives in `app.services.groups`.
"""

from __future__ import annotations

from flask import jsonify

from app.api import bp
from app.api import responses as out
from app.api.auth import access, actor
from app.api.openapi import doc
from app.api.schemas import GroupCreate, GroupUpdate, NoBody
from app.api.serializers import group_dict, member_dict
from app.api.util import listing, page_from_args, parse_body
from app.models import Group
from app.services import groups as service


def _with_facts(group: Group) -> dict:
    return group_dict(group, service.group_facts([group.id]).get(group.id, service.GroupFacts()))


@bp.get("/groups")
@access("admin")
@doc("List groups", responses={200: list[out.Group]}, paged=True)
def list_groups():
    """Every group, ordered by name; `limit`/`offset`, total in X-Total-Count."""
    groups, total = service.list_groups(page_from_args())
    facts = service.group_facts([g.id for g in groups])
    return listing([group_dict(g, facts.get(g.id, service.GroupFacts())) for g in groups], total)


@bp.post("/groups")
@access("admin")
@doc("Create a group", body=GroupCreate, responses={201: out.Group}, errors=(409,))
def create_group():
    """Add a group; `name` required. :raise 400: a field breaks its rule. :raise 409: the name is taken."""
    body, _ = parse_body(GroupCreate)
    group = service.create_group(actor(), **body.model_dump())
    return jsonify(group_dict(group, service.GroupFacts())), 201


@bp.get("/groups/<group_id>")
@access("admin")
@doc("Get a group", responses={200: out.Group})
def get_group(group_id: str):
    """:raise 400: malformed id. :raise 404: "Group not found." """
    return jsonify(_with_facts(service.get_group(group_id)))


@bp.patch("/groups/<group_id>")
@access("admin")
@doc("Update a group", body=GroupUpdate, responses={200: out.Group}, errors=(409,))
def update_group(group_id: str):
    """Change `name` and/or `display_name`. :raise 400: :raise 404: :raise 409: the name is taken."""
    body, sent = parse_body(GroupUpdate)
    group = service.update_group(actor(), group_id, {field: getattr(body, field) for field in sent})
    return jsonify(_with_facts(group))


@bp.delete("/groups/<group_id>")
@access("admin")
@doc("Delete a group", responses={204: None})
def delete_group(group_id: str):
    """Delete the group with its memberships; it leaves every model config's access list, and a
    config open to it alone is then open to no one (fails closed). :raise 404:"""
    service.delete_group(actor(), group_id)
    return "", 204


@bp.get("/groups/<group_id>/members")
@access("admin")
@doc("List a group's members", responses={200: list[out.GroupMember]}, paged=True)
def list_group_members(group_id: str):
    """The group's members, ordered by email; `source` is `manual` or `sso`. :raise 404:"""
    members, total = service.page_members(group_id, page_from_args())
    return listing([member_dict(m) for m in members], total)


@bp.put("/groups/<group_id>/members/<user_id>")
@access("admin")
@doc("Add a member to a group", body=NoBody, body_required=False, responses={200: out.GroupMember})
def add_group_member(group_id: str, user_id: str):
    """Make the user a `manual` member; idempotent (an `sso` membership becomes `manual`).

    :raise 404: "Group not found.", or "User not found." (unknown or deactivated user).
    """
    parse_body(NoBody, optional=True)
    return jsonify(member_dict(service.add_member(actor(), group_id, user_id)))


@bp.delete("/groups/<group_id>/members/<user_id>")
@access("admin")
@doc("Remove a member from a group", responses={204: None})
def remove_group_member(group_id: str, user_id: str):
    """Remove the membership whatever its source; idempotent. :raise 404: "Group not found." """
    service.remove_member(actor(), group_id, user_id)
    return "", 204
