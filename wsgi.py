"""WSGI entry point from a checkout: ``gunicorn wsgi:app`` (``gunicorn.conf.py`` beside it
applies settings_server/gunicorn_conf.py)."""

from settings_server.wsgi import app

__all__ = ["app"]
