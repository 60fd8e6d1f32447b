from flask import jsonify

from app.api import bp
from app.api.auth import access, actor


@bp.get("/me")
@access("user")
def get_me():
    """The caller: lets a client check its token."""
    user = actor().user
    return jsonify({"id": str(user.id), "email": user.email, "name": user.name, "role": user.role})
