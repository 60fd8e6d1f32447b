from flask import jsonify

from app.api import bp
from app.api import responses as out
from app.api.auth import access, actor
from app.api.openapi import doc


@bp.get("/me")
@access("user")
@doc("The caller", responses={200: out.Me})
def get_me():
    """The caller: lets a client check its token."""
    user = actor().user
    return jsonify({"id": str(user.id), "email": user.email, "name": user.name, "role": user.role})
