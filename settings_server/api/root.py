"""GET /api/: what a client checks before it connects (docs/contract.md §11.1, §14 row 18)."""

from __future__ import annotations

import platform
import sys
from urllib.parse import urlsplit

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from .. import __version__, auth
from ..rendering import json_response
from ..service import GLOBAL

blp = Blueprint("root", __name__, url_prefix="/api", description="Server information")

_SHOWN = ("INVENTREE_INSTANCE", "INVENTREE_ANNOUNCE_ID", "INVENTREE_INSTANCE_ID", "LOGIN_ENABLE_PWD_FORGOT")


@blp.route("/")
class Root(MethodView):
    @blp.doc(security=[{}, {"tokenAuth": []}, {"basicAuth": []}, {"cookieAuth": []}],
             responses={"200": {"description": "Server information"}})
    def get(self):
        """Server information; no authentication needed, more detail for staff."""
        values = current_app.extensions["settings_service"].values(GLOBAL, _SHOWN)
        user = auth.current_user()
        staff = user is not None and user.is_staff
        backend = urlsplit(current_app.config["SETTINGS_BACKEND"]).scheme
        info = {
            "server": "InvenTree",
            "id": values["INVENTREE_INSTANCE_ID"] if values["INVENTREE_ANNOUNCE_ID"] == "True" else None,
            "version": __version__,
            "instance": values["INVENTREE_INSTANCE"],
            "apiVersion": 327,
            "worker_running": False,
            "worker_count": 0,
            "worker_pending_tasks": 0,
            "plugins_enabled": False,
            "plugins_install_disabled": False,
            "active_plugins": False,
            "email_configured": False,
            "debug_mode": False,
            "docker_mode": False,
            "default_locale": "en-us",
            "customize": {"logo": "", "splash": "", "login_message": None, "navbar_message": None},
            "system_health": True if staff else None,
            "database": backend if staff else None,
            "platform": f"{platform.system()} {platform.release()}" if staff else None,
            "installer": "PIP" if staff else None,
            "target": f"python {sys.version.split()[0]}" if staff else None,
            "django_admin": "" if staff else None,
            "settings": {
                "sso_registration": False,
                "registration_enabled": False,
                "password_forgotten_enabled": values["LOGIN_ENABLE_PWD_FORGOT"] == "True",
            },
        }
        return json_response(info, spaced=True)
