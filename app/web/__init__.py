from flask import Blueprint

bp = Blueprint("web", __name__)

from app.web import apidocs, models, views  # noqa: E402,F401
