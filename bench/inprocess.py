"""CPU per request, in-process: the request path without gunicorn, the network or ``wrk``.

``bench/run.py`` measures throughput against a ceiling with real servers, which a busy machine
makes noisy. This script measures what the code itself costs: it builds the app as
``bench/run.py``'s gunicorn does (``create_app()`` from the environment, ``SETTINGS_LOG_LEVEL=
warning``, Redis with ``cache=on`` or SQLite, the bench user, its token and stored settings),
builds a WSGI environ for each of the bench's requests and calls the app with it ``--requests``
times, reading ``time.process_time()`` around the loop. The same is done for the ceiling
(``bench/ceiling.py``) serving the bytes our app gave. Figures are µs of this process's CPU
per request (the store's own CPU, Redis's, is not in them; its client's is), the median over
``--rounds`` rounds, ours and the ceiling's alternately; *ratio* is the ceiling's µs over
ours, an upper bound of what ``wrk`` can show (gunicorn's own per-request cost, the same for
both, is left out).

Redis is the test Redis (``SETTINGS_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``)
under a private key prefix, deleted at the end. Run from anywhere with the project's Python::

    python bench/inprocess.py                      # Redis cache=on, every request
    python bench/inprocess.py --backend sqlite
    python bench/inprocess.py --multiprocess       # metrics in files, as settings-server run
    python bench/inprocess.py --profile "global PATCH"   # cProfile of one request type
    python bench/inprocess.py --instructions       # instructions per request, under callgrind

CPU time on a machine that other work shares varies by tens of percent from run to run.
``--instructions`` counts instead the machine instructions this process executes per request
(valgrind's callgrind, instrumenting only the measured loops; the rest runs uninstrumented):
the same code gives the same count on a busy machine, within a fraction of a percent. It leaves
out time in the kernel (socket calls), and takes a minute or two.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import run  # bench/run.py: the same requests, store and user as the real bench

TEST_REDIS = os.environ.get("SETTINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Request:
    """One bench request as a WSGI environ template; :meth:`environ` is a fresh copy."""

    def __init__(self, endpoint: run.Endpoint, auth: str) -> None:
        from werkzeug.test import EnvironBuilder

        headers = {"Authorization": auth, "Host": "127.0.0.1:8000", "User-Agent": "inprocess"}
        if endpoint.body is not None:
            headers["Content-Type"] = "application/json"
        path, _, query = endpoint.path.partition("?")
        builder = EnvironBuilder(
            path=path, query_string=query, method=endpoint.method, headers=headers,
            data=endpoint.body, environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )  # fmt: skip
        self.endpoint = endpoint
        self.bodies = [(endpoint.body or "").encode()]
        other = getattr(endpoint, "other_body", None)  # a write alternating between two values
        if other is not None:
            self.bodies.append(other.encode())
        self.sent = 0
        self.template = builder.get_environ()

    def environ(self) -> dict[str, Any]:
        """The next request's environ (as ``bench/request.lua``: a write with another body
        sends it every other time)."""
        body = self.bodies[self.sent % len(self.bodies)]
        self.sent += 1
        environ = self.template.copy()
        environ["wsgi.input"] = io.BytesIO(body)
        if body:
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ


def call(app: Callable[..., Any], environ: dict[str, Any]) -> tuple[str, str, bytes]:
    """One request through ``app`` as a WSGI server makes it: status, content type, body."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    content_type = next((v for k, v in started[1] if k.lower() == "content-type"), "")
    return started[0], content_type, body


def cpu_us(app: Callable[..., Any], request: Request, n: int) -> float:
    """Process CPU µs per request over ``n`` requests."""
    environs = [request.environ() for _ in range(n)]
    started = time.process_time()
    _serve(app, environs)
    return (time.process_time() - started) / n * 1e6


class Callgrind:
    """Instruction counts of this process, run under ``valgrind --tool=callgrind
    --instr-atstart=no`` (see :func:`main`): :meth:`count` runs a function with the
    instrumentation on and returns the instructions it took."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.pid = str(os.getpid())
        self.overhead = 0
        self.overhead = self.count(lambda: None)  # switching on and off

    def _control(self, *options: str) -> None:
        subprocess.run(["callgrind_control", *options, self.pid], check=True,
                       capture_output=True)  # fmt: skip

    def count(self, work: Callable[[], Any]) -> int:
        self._control("-z")
        self._control("-i", "on")
        work()
        self._control("-i", "off")
        before = set(self.out_dir.iterdir())
        self._control("-d")
        (dump,) = set(self.out_dir.iterdir()) - before
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                dump.unlink()
                return int(line.split()[1]) - self.overhead
        raise RuntimeError(f"no totals in {dump}")


def instructions(grind: Callgrind, app: Callable[..., Any], request: Request, n: int) -> float:
    """Instructions per request over ``n`` requests."""
    environs = [request.environ() for _ in range(n)]
    return grind.count(lambda: _serve(app, environs)) / n


def _serve(app: Callable[..., Any], environs: list[dict[str, Any]]) -> None:
    for environ in environs:
        result = app(environ, _start_response)
        for _ in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return _write


def _write(data: bytes) -> None:
    pass


@contextlib.contextmanager
def store_url(backend: str) -> Iterator[str]:
    """A fresh store of ``backend``, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="settings-inprocess-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'main.db'}"
        return
    import redis

    prefix = f"bench-inprocess-{uuid.uuid4().hex}:"
    separator = "&" if "?" in TEST_REDIS else "?"
    try:
        yield f"{TEST_REDIS}{separator}prefix={prefix}&cache=on"
    finally:
        with redis.Redis.from_url(TEST_REDIS) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)


def build_app(url: str) -> Any:
    """The app as ``bench/run.py``'s gunicorn builds it: from the environment."""
    for name in [k for k in os.environ if k.startswith("SETTINGS_")]:
        del os.environ[name]
    os.environ.update(run.APP_ENV, SETTINGS_BACKEND=url)
    from settings_server import create_app

    return create_app()


def measure(args: argparse.Namespace) -> int:
    import ceiling

    endpoints = [e for e in run.ENDPOINTS if not args.only or e.label in args.only]
    with store_url(args.backend) as url:
        token = run.prepare_store(url)
        app = build_app(url)
        requests = [Request(e, f"Token {token}") for e in endpoints]
        recorded = []
        for request in requests:
            status, content_type, body = call(app, request.environ())
            if not status.startswith("200"):
                print(f"{request.endpoint.path}: {status} {body[:300]!r}", file=sys.stderr)
                return 1
            recorded.append({
                "method": request.endpoint.method, "path": request.endpoint.path,
                "status": 200, "content_type": content_type, "body": body.decode(),
            })  # fmt: skip
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            import json

            json.dump(recorded, f)
        try:
            ceiling_app = ceiling.create_app(f.name)
        finally:
            os.unlink(f.name)
        for request, want in zip(requests, recorded, strict=True):
            if call(ceiling_app, request.environ())[2].decode() != want["body"]:
                print(f"the ceiling does not mirror {request.endpoint.path}", file=sys.stderr)
                return 1

        if args.profile:
            (request,) = [r for r in requests if r.endpoint.label == args.profile]
            cpu_us(app, request, args.requests)  # warm
            profiler = cProfile.Profile()
            profiler.enable()
            cpu_us(app, request, args.requests)
            profiler.disable()
            stats = pstats.Stats(profiler).strip_dirs().sort_stats(args.sort)
            stats.print_stats(args.lines)
            return 0

        ours: dict[str, list[float]] = {r.endpoint.label: [] for r in requests}
        bare: dict[str, list[float]] = {r.endpoint.label: [] for r in requests}
        for request in requests:  # warm both
            cpu_us(app, request, 200)
            cpu_us(ceiling_app, request, 200)
        if args.instructions:
            grind = Callgrind(os.environ[UNDER_CALLGRIND])
            print(f"Instructions per request ({args.backend}"
                  f"{', cache=on' if args.backend == 'redis' else ''}"
                  f"{', metrics in files' if args.multiprocess else ''}; "
                  f"{args.requests} requests, under callgrind)\n")
            print("| Request | ours (thousands) | ceiling (thousands) | ceiling ÷ ours |")
            print("|---|--:|--:|--:|")
            for request in requests:
                o = instructions(grind, app, request, args.requests)
                c = instructions(grind, ceiling_app, request, args.requests)
                print(f"| {request.endpoint.label} | {o / 1000:.1f} | {c / 1000:.1f} "
                      f"| {c / o:.2f} |", flush=True)
            app.extensions["settings_store"].close()
            return 0
        for _ in range(args.rounds):
            for request in requests:
                ours[request.endpoint.label].append(cpu_us(app, request, args.requests))
                bare[request.endpoint.label].append(cpu_us(ceiling_app, request, args.requests))
        app.extensions["settings_store"].close()

    print(f"In-process CPU per request ({args.backend}"
          f"{', cache=on' if args.backend == 'redis' else ''}"
          f"{', metrics in files' if args.multiprocess else ''}; median of {args.rounds} rounds "
          f"of {args.requests} requests)\n")
    print("| Request | ours µs | (best) | ceiling µs | (best) | ceiling ÷ ours |")
    print("|---|--:|--:|--:|--:|--:|")
    for request in requests:
        label = request.endpoint.label
        o, c = statistics.median(ours[label]), statistics.median(bare[label])
        print(f"| {label} | {o:.1f} | {min(ours[label]):.1f} | {c:.1f} | {min(bare[label]):.1f} "
              f"| {c / o:.2f} |")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per request type (7)")
    parser.add_argument("--requests", type=int, help="requests per round (2000)")
    parser.add_argument("--only", action="append", help="a request label (repeatable)")
    parser.add_argument(
        "--multiprocess", action="store_true",
        help="metrics in PROMETHEUS_MULTIPROC_DIR files, as `settings-server run` keeps them",
    )  # fmt: skip
    parser.add_argument(
        "--instructions", action="store_true",
        help="count instructions per request under valgrind's callgrind (requests: 200)",
    )  # fmt: skip
    parser.add_argument("--profile", metavar="LABEL", help="cProfile one request type instead")
    parser.add_argument("--sort", default="tottime", help="profile sort key (tottime)")
    parser.add_argument("--lines", type=int, default=45, help="profile lines (45)")
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 200 if args.instructions else 2000
    return args


UNDER_CALLGRIND = "INPROCESS_CALLGRIND_DIR"  # set for the run under valgrind: its dump directory


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.instructions and UNDER_CALLGRIND not in os.environ:
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="settings-inprocess-callgrind-") as tmp:
            argv = [
                "valgrind", "--tool=callgrind", "--instr-atstart=no", "--quiet",
                f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, __file__,
                *(sys.argv[1:] if argv is None else argv),
            ]  # fmt: skip
            done = subprocess.run(argv, check=False, env={**os.environ, UNDER_CALLGRIND: tmp})
            return done.returncode
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if not args.multiprocess:
        return measure(args)
    with tempfile.TemporaryDirectory(prefix="settings-inprocess-metrics-") as tmp:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp  # before prometheus_client is imported
        return measure(args)


if __name__ == "__main__":
    sys.exit(main())
