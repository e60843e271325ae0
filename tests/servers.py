"""Real servers for the deployment tests: gunicorn (through ``settings-server run`` or plain
``gunicorn``) and private redis-server instances, on free ports, always stopped afterwards (see
the ``servers`` and ``private_redis`` fixtures in conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT = 20.0  # seconds for a server to answer its first request
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(backend: str, **extra: str) -> dict[str, str]:
    """The environment of a server on ``backend``: no admin bootstrap, no inherited settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SETTINGS_", "GUNICORN"))}
    env.pop("WEB_CONCURRENCY", None)
    env.update({"SETTINGS_BACKEND": backend, "PYTHONPATH": str(ROOT), **extra})
    return env


class Server:
    """A gunicorn process; its stdout and stderr go to files (no pipe can fill up)."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / f"stdout-{port}.log"
        self.stderr_path = workdir / f"stderr-{port}.log"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> Server:
        """Wait until the server answers any HTTP response (a 503 counts: it is up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(f"{self.url}/api/health/", timeout=2)
                return self
            except (requests.ConnectionError, requests.Timeout):  # refused, or still booting
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start:\n{self.stderr()}") from None
                time.sleep(0.1)

    def workers(self) -> list[int]:
        """Pids of the arbiter's live worker processes."""
        return children(self.pid)

    def wait_workers_listening(self, count: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``count`` workers run with signal handlers of their own. A worker just
        forked (a replacement for a killed one) keeps the arbiter's handlers until it has
        set up: a SIGTERM it gets then is lost, and a graceful stop waits for it until it is
        killed. Read from /proc: a worker that has set up catches SIGABRT, which the arbiter
        does not (gunicorn's ``Worker.init_signals`` installs it after SIGTERM)."""
        abort = 1 << (signal.SIGABRT - 1)
        deadline = time.monotonic() + timeout
        while True:
            listening = 0
            for pid in self.workers():
                try:
                    status = (Path("/proc") / str(pid) / "status").read_text()
                except OSError:
                    continue
                caught = next(int(line.split()[1], 16) for line in status.splitlines()
                              if line.startswith("SigCgt:"))
                listening += bool(caught & abort)
            if listening >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{listening} of {count} workers set up in {timeout} s")
            time.sleep(0.05)

    def request_lines(self) -> list[dict]:
        """The JSON request lines on stdout so far."""
        lines = []
        for line in self.stdout().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == "request":
                    lines.append(record)
        return lines

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the arbiter (SIGTERM: graceful) and wait; SIGKILL everything on timeout."""
        if self.process.poll() is None:
            workers = self.workers()
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
            for pid in workers:  # orphans of a killed arbiter
                _kill(pid)
        return self.process.returncode


def children(pid: int) -> list[int]:
    """Pids of the live child processes of ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class RedisServer:
    """A private redis-server on a free port, every write fsynced to its AOF, so it can be
    killed and restarted with its data. Never the machine's shared Redis."""

    def __init__(self, workdir: Path) -> None:
        self.executable = shutil.which("redis-server")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # A Unix socket path has at most 107 bytes; pytest's temporary paths can be longer.
        self.socket = Path(tempfile.mkdtemp(prefix="redis-")) / "redis.sock"
        self.socket_url = f"unix://{self.socket}?db=0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        import redis

        self.socket.parent.mkdir(exist_ok=True)  # removed by kill()
        self.process = subprocess.Popen(
            [self.executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
             "--logfile", str(self.workdir / "redis.log"), "--unixsocket", str(self.socket)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    client.ping()
                return self
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (a crash) and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.socket.parent, ignore_errors=True)
