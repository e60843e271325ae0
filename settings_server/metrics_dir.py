"""Where gunicorn's workers keep their metric values: one directory for all of them,
``PROMETHEUS_MULTIPROC_DIR``, for prometheus_client's multiprocess mode (see
:mod:`settings_server.metrics`).

Used by gunicorn's hooks in the master (``settings_server/gunicorn_conf.py``), so it imports
nothing but the standard library: the master must not load prometheus_client before the
variable is set, since prometheus_client picks its way of keeping values when it is imported.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

_made: str | None = None  # the directory prepare() made, removed by remove()


def prepare() -> str:
    """Before any worker starts (``on_starting``): use the operator's ``PROMETHEUS_MULTIPROC_DIR``,
    emptied of an earlier run's values, or make a private one; workers inherit the variable.
    Returns the directory."""
    global _made
    path = os.environ.get(MULTIPROCESS_DIR)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
        return path
    path = _made = tempfile.mkdtemp(prefix="settings-server-metrics-")
    os.environ[MULTIPROCESS_DIR] = path
    return path


def worker_exited(pid: int) -> None:
    """A worker is gone (``child_exit``): its live gauges go with it; its counts stay."""
    if os.environ.get(MULTIPROCESS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def remove() -> None:
    """At the master's exit (``on_exit``): remove the directory if :func:`prepare` made it."""
    global _made
    if _made is not None:
        shutil.rmtree(_made, ignore_errors=True)
        _made = None
