"""WSGI entry point: ``gunicorn wsgi:app``."""

from settings_server import create_app

app = create_app()
