"""Read by gunicorn when started from this directory (``gunicorn wsgi:app``): the settings and
checks of ``settings-server run``, see settings_server/gunicorn_conf.py. Command-line options
still win."""

from settings_server.gunicorn_conf import *
