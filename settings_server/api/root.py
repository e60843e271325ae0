"""GET /api/: server information (SPEC §11.1)."""

from flask_smorest import Blueprint

from ..errors import json_response

blp = Blueprint("root", __name__, url_prefix="/api", description="Server information")


@blp.route("/")
def root():
    """Server information; no authentication needed."""
    return json_response({"server": "InvenTree", "apiVersion": 327}, spaced=True)
