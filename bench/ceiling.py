"""The ceiling for ``bench/run.py``: a bare Flask app that answers each benchmarked request with
the bytes our server gave for it, with no auth, no store and no registry.

``BENCH_CEILING_RESPONSES`` names a JSON file written by ``run.py``: a list of
``{"method", "path", "status", "content_type", "body"}`` where ``path`` includes the query
string and ``body`` is the response text. Run under the same gunicorn settings as the server
(``gunicorn -w 2 -k <worker class> ceiling:app`` from ``bench/``), its throughput is what Flask and
gunicorn alone reach on this machine for those bodies.

With ``BENCH_CEILING_WRITE_URL`` (a Redis URL) it also makes one ``HSET`` for every ``PATCH``
before it answers: what one round trip to Redis costs a bare app (``bench/one_write.py``).
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response, request


def create_app(responses_file: str, write_url: str | None = None) -> Flask:
    """A Flask app serving the recorded responses; 404 for anything not recorded. With
    ``write_url``, each ``PATCH`` first writes its body to that Redis (one ``HSET``)."""
    with open(responses_file, encoding="utf-8") as f:
        recorded = json.load(f)
    canned = {
        (r["method"], r["path"]): (r["body"].encode("utf-8"), r["status"], r["content_type"])
        for r in recorded
    }
    app = Flask(__name__)
    writer = None
    if write_url:
        import redis

        writer = redis.Redis.from_url(write_url)

    @app.route("/", defaults={"_path": ""}, methods=["GET", "PATCH"])
    @app.route("/<path:_path>", methods=["GET", "PATCH"])
    def answer(_path: str) -> Response:
        query = request.query_string.decode("latin-1")
        path = request.path + ("?" + query if query else "")
        found = canned.get((request.method, path))
        if found is None:
            return Response(b"not recorded", 404, content_type="text/plain")
        body, status, content_type = found
        if writer is not None and request.method == "PATCH":
            writer.hset("bench-ceiling-writes", path, request.get_data())
        return Response(body, status, content_type=content_type)

    return app


#: What gunicorn serves (``ceiling:app``); ``None`` when imported without the variable.
app = (
    create_app(os.environ["BENCH_CEILING_RESPONSES"], os.environ.get("BENCH_CEILING_WRITE_URL"))
    if "BENCH_CEILING_RESPONSES" in os.environ
    else None
)
