"""WSGI entry point of the installed package: ``gunicorn settings_server.wsgi:app`` (what
``settings-server run`` serves). Importing it builds the app from the environment."""

from settings_server import create_app

app = create_app()
