"""What one Redis round trip costs a bare app: the PATCH of ``bench/run.py`` against the
ceiling (``bench/ceiling.py``) and against the same ceiling making one ``HSET`` per PATCH, under
the same gunicorn settings, alternately, in one run; our server's PATCH beside them.

    python bench/one_write.py [--duration 2] [--rounds 3]

It bounds what issue 7's PATCH target (>= 0.5 of the ceiling) can reach on a machine: a server
that writes each PATCH to Redis makes at least that round trip.
"""

from __future__ import annotations

import json
import statistics
import sys

import run


def main(argv: list[str] | None = None) -> int:
    args = run.parse_args(argv)
    (patch,) = [e for e in run.ENDPOINTS if e.label == "global PATCH"]
    with run.Run(args.worker_class) as bench:
        url = bench.redis("main")
        auth = f"Token {run.prepare_store(url + '?cache=on')}"
        ours = bench.gunicorn(
            "ours", "wsgi:app", cwd=run.REPO, env={"SETTINGS_BACKEND": url + "?cache=on", **run.APP_ENV}
        )
        responses = bench.tmp / "one-write.json"
        responses.write_text(json.dumps(run.record(ours, [patch], auth)))
        ceiling_env = {"BENCH_CEILING_RESPONSES": str(responses)}
        servers = [
            ours,
            bench.gunicorn("ceiling", "ceiling:app", cwd=run.BENCH, env=ceiling_env),
            bench.gunicorn(
                "ceiling + one HSET", "ceiling:app", cwd=run.BENCH,
                env={**ceiling_env, "BENCH_CEILING_WRITE_URL": url},
            ),
        ]  # fmt: skip
        rates: dict[str, list[float]] = {s.name: [] for s in servers}
        for _ in range(args.rounds):
            for server in servers:
                measured = run.wrk(server, patch, auth, args)
                rates[server.name].append(measured.requests / measured.seconds)
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(f"PATCH, wrk -c{args.connections} -d{args.duration}s, medians of {args.rounds} rounds\n")
    print("| Server | req/s | ÷ ceiling |")
    print("|---|--:|--:|")
    for name, value in median.items():
        print(f"| {name} | {value:,.0f} | {value / median['ceiling']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
