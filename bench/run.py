"""The benchmark of issue 13: ctt-broker against a bare Starlette reference, side by side.

    python -m bench.run [--backends sqlite,postgresql] [--connections 32,64] [--rounds 3]
                        [--duration 10] [--workers 1] [--json FILE] [--history N]
                        [--profile DIR] [--mode production|sandbox]
    python -m bench.run --workers-compare 1,2      # product alone, PostgreSQL
    python -m bench.run --soak SECONDS             # product alone, RSS every 10 s
    python -m bench.run --flows N                  # broker CPU per full admin flow
    python -m bench.run --smoke                    # 1 round x 1 s, 4 connections, SQLite

For each database it migrates a fresh one (a temporary SQLite file, or a new schema on the
PostgreSQL server, dropped at the end), creates a provider with one API key and callback,
starts ``ctt-broker serve`` of this tree (1 worker) and ``bench/reference.py`` on other
loopback ports against that database, and drives both with ``wrk`` (``bench/post.lua``) in
alternating rounds, each round on a fresh enterprise (so no round pays for another's
history). It reports every round, the median ratio product/reference, p99/p50 and the
worker's RSS, and the load generator's own CPU so a saturated machine shows. Every process
it starts is stopped on exit; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: import this tree's broker and emulator
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.reference import load_catalog_rows, new_id  # noqa: E402
from sandbox.secret_files import write_secret_files  # noqa: E402

PYTHON = sys.executable
SERVE = [PYTHON, "-m", "broker.cli", "serve"]  # ctt-broker serve of this tree
LUA = ROOT / "bench" / "post.lua"
CALLBACK = "https://portal.example.test/teams/callback"
PUBLIC = "https://broker.example.test"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN = "admin@contoso.onmicrosoft.com"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_SECONDS = 60.0
HIGH_RATE = "1000000/second"  # the benchmark measures speed, not the rate limiter
RATE_LIMITS = ("RATE_LIMIT_API", "RATE_LIMIT_ADMIN", "RATE_LIMIT_LINK", "RATE_LIMIT_AUTH_FAILURES")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def say(line: str = "") -> None:
    """Print at once: the output is the report."""
    print(line, flush=True)


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (gunicorn's workers of its master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_load() -> str:
    """1-minute load average / CPU pressure (some, avg10): other work on the machine skews."""
    load = Path("/proc/loadavg").read_text().split()[0]
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1]
        return f"{load}/{float(some.split('=')[1]):.0f}%"
    except (OSError, IndexError, ValueError):
        return load


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Process:
    """A child process in its own session, its output in a log file; stopped by its group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(  # noqa: S603
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        """The process id (for ``ctt-broker serve``: gunicorn's master, it execs)."""
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        """The end of its output, for error messages."""
        text = self.log.read_text("utf-8", "replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_http(self, url: str) -> None:
        """Until ``url`` answers 200; BenchError with the log tail if it dies or times out."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise BenchError(f"{self.name} did not answer {url} in time:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL if it lingers."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # stray workers of a dead master


@dataclass
class Server:
    """A server under test: where it listens and which processes do its work."""

    label: str
    process: Process
    url: str
    gunicorn: bool

    def __post_init__(self) -> None:
        RUNNING.append(self)

    def stop(self) -> None:
        """Stop its processes."""
        if self in RUNNING:
            RUNNING.remove(self)
        self.process.stop()

    def workers(self) -> list[int]:
        """The worker pids (gunicorn's children), or the server process itself."""
        if not self.gunicorn:
            return [self.process.pid]
        pids = children(self.process.pid)
        if not pids:
            raise BenchError(f"{self.label}: no gunicorn worker under {self.process.pid}")
        return pids

    def cpu(self) -> float:
        """CPU seconds used so far by its workers."""
        return sum(cpu_seconds(pid) for pid in self.workers())

    def rss(self) -> list[float]:
        """RSS in MB of each worker."""
        return [round(rss_mb(pid), 1) for pid in self.workers()]


RUNNING: list[Server] = []
SETTLE_SECONDS = 60.0


def settle() -> None:
    """Wait until every running server is idle: a round must not pay for the last one's backlog.

    wrk stops sending when its time is up, but the requests already accepted (up to one per
    connection, more in the server's queues) are still being served.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        before = sum(server.cpu() for server in RUNNING)
        time.sleep(0.5)
        if sum(server.cpu() for server in RUNNING) - before < 0.05:
            return
    say(f"note: the servers were still busy after {SETTLE_SECONDS:g} s; measuring anyway")


# ------------------------------------------------------------------------------ the product


def cli(env: dict[str, str], *argv: str) -> str:
    """``ctt-broker ARGV`` of this tree (``python -m broker.cli``); its stdout."""
    done = subprocess.run(  # noqa: S603
        [PYTHON, "-m", "broker.cli", *argv], env=env, capture_output=True, text=True, timeout=180
    )
    if done.returncode != 0:
        raise BenchError(f"ctt-broker {' '.join(argv[:2])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Setup:
    """One database with its provider: what both servers share."""

    backend: str
    database_url: str
    env: dict[str, str]
    api_key: str
    provider_id: str
    work: Path


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any CTT_ or PROMETHEUS_ variable, this tree first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTT_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@contextlib.contextmanager
def database(backend: str, work: Path, postgres: str) -> Iterator[str]:
    """A fresh database URL: a SQLite file in ``work`` or a new PostgreSQL schema (dropped)."""
    if backend == "sqlite":
        yield f"sqlite:///{work / 'broker.sqlite3'}"
        return
    from sqlalchemy import create_engine, text

    schema = f"ctt_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        raise BenchError(f"PostgreSQL at {postgres} is not reachable: {exc}") from exc
    try:
        yield f"{postgres}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# ``--set NAME=VALUE``: more product settings, in every mode; they win over the benchmark's
# own (e.g. CTT_VALIDATE_RESPONSES=1 measures flows with the sandbox's answer checking).
EXTRA_SETTINGS: dict[str, str] = {}


def prepare(backend: str, url: str, work: Path, settings: dict[str, str]) -> Setup:
    """Migrate, create the provider (one key, one callback); the environment of the servers."""
    env = base_env(
        {
            "CTT_DATABASE_URL": url,
            "CTT_DATA_DIR": str(work / "data"),
            **{f"CTT_{name}": HIGH_RATE for name in RATE_LIMITS},
            **settings,
            **EXTRA_SETTINGS,
        }
    )
    cli(env, "db", "upgrade")
    created = json.loads(cli(env, "provider", "create", "Bench", "--callback", CALLBACK, "--json"))
    return Setup(backend, url, env, created["apiKey"], created["providerId"], work)


def start_product(
    setup: Setup, workers: int, name: str = "ctt-broker", port: int | None = None
) -> Server:
    """``ctt-broker serve --workers N`` of this tree on a (free) loopback port."""
    port = port or free_port()
    process = Process(
        name.replace(" ", "-"),
        [*SERVE, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
        setup.env,
        setup.work,
    )
    server = Server(name, process, f"http://127.0.0.1:{port}", gunicorn=True)
    try:
        process.wait_http(f"{server.url}/health")
        deadline = time.monotonic() + START_SECONDS
        while len(children(process.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
    except BaseException:
        server.stop()
        raise
    return server


def start_reference(setup: Setup) -> Server:
    """``bench/reference.py`` under uvicorn on a free loopback port, same database."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.reference", "--port", str(port)]
    argv += ["--database-url", setup.database_url, "--public-base-url", PUBLIC]
    process = Process("reference", argv, setup.env, setup.work)
    server = Server("reference", process, f"http://127.0.0.1:{port}", gunicorn=False)
    try:
        process.wait_http(f"{server.url}/health")
    except BaseException:
        server.stop()
        raise
    return server


def new_enterprise(product: Server, setup: Setup) -> str:
    """A fresh, unregistered enterprise (created through the product's API)."""
    answer = httpx.post(
        f"{product.url}/enterprises",
        json={"name": "Bench Enterprise", "externalId": f"bench-{uuid.uuid4().hex}"},
        headers={"Authorization": f"Bearer {setup.api_key}"},
        timeout=30,
    )
    if answer.status_code != 201:
        raise BenchError(f"createEnterprise answered {answer.status_code}: {answer.text[:300]}")
    enterprise_id: str = answer.json()["enterpriseId"]
    return enterprise_id


# ------------------------------------------------------------------------------------- wrk


@dataclass
class Round:
    """One wrk run against one server."""

    server: str
    connections: int
    duration: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    sample: str
    wrk_cpu_s: float
    server_cpu_s: float
    rss_mb: list[float] = field(default_factory=list)
    label: str = ""
    load: str = ""

    @property
    def tail_ratio(self) -> float:
        """p99 / p50."""
        return self.p99_ms / self.p50_ms if self.p50_ms else float("nan")

    @property
    def bad(self) -> bool:
        """Any answer that was not 2xx, or a socket error."""
        return self.non2xx > 0 or self.socket_errors > 0 or self.requests == 0


def wrk(
    url: str, body: str, api_key: str, duration: float, connections: int, threads: int
) -> dict[str, Any]:
    """Run wrk once; its summary line plus its own CPU time (from wait4's rusage)."""
    executable = shutil.which("wrk")
    if executable is None:
        raise BenchError("wrk is not installed: apt-get install wrk (make bench does it as root)")
    argv = [executable, "-t", str(min(threads, connections)), "-c", str(connections)]
    argv += ["-d", f"{duration:g}s", "--timeout", "10s", "-s", str(LUA), url]
    env = {**os.environ, "BENCH_BODY": body, "BENCH_API_KEY": api_key}
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + duration + 60
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    process.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    raise BenchError("wrk did not finish in time")
                time.sleep(0.05)
        finally:
            if process.returncode is None:
                process.kill()
                process.wait(timeout=10)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    summary = next((line for line in text.splitlines() if line.startswith("BENCH ")), None)
    if process.returncode != 0 or summary is None:
        raise BenchError(f"wrk failed ({process.returncode}):\n{text[-2000:]}")
    result: dict[str, Any] = json.loads(summary[len("BENCH ") :])
    sample = next((line for line in text.splitlines() if line.startswith("BENCH_SAMPLE")), "")
    result["sample"] = sample[len("BENCH_SAMPLE ") :].strip()
    result["wrk_cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def request_body(enterprise_id: str, action_type: str = "REGISTRATION") -> str:
    """The getActionItemUrl body every request of a round sends."""
    document = {
        "actionType": action_type,
        "enterpriseId": enterprise_id,
        "callbackUrl": f"{CALLBACK}?customer=1042",
        "state": "bench-order-77",
    }
    return json.dumps(document)


def drive(
    server: Server,
    setup: Setup,
    enterprise_id: str,
    *,
    connections: int,
    duration: float,
    threads: int,
    label: str = "",
) -> Round:
    """One round against ``server`` once all are idle; its CPU and (after the round) its RSS."""
    settle()
    cpu_before = server.cpu()
    url = f"{server.url}/enterprise/getActionItemUrl"
    result = wrk(url, request_body(enterprise_id), setup.api_key, duration, connections, threads)
    return Round(
        server=server.label,
        connections=connections,
        duration=result["duration_s"],
        requests=result["requests"],
        rps=result["rps"],
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        non2xx=result["non2xx"],
        socket_errors=sum(
            result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        sample=result["sample"],
        wrk_cpu_s=round(result["wrk_cpu_s"], 3),
        server_cpu_s=round(server.cpu() - cpu_before, 3),
        rss_mb=server.rss(),
        label=label,
        load=machine_load(),
    )


# ------------------------------------------------------------------------------- reporting

HEADER = (
    f"{'round':<7}{'server':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99/p50':>9}"
    f"{'non-2xx':>9}{'srv CPU%':>10}{'wrk CPU%':>10}{'RSS MB':>9}  load/CPU psi"
)


def row(name: str, item: Round) -> str:
    """One table line; RSS is the worker's after the round."""
    seconds = item.duration or 1
    rss = "/".join(f"{value:.0f}" for value in item.rss_mb)
    return (
        f"{name:<7}{item.server:<16}{item.rps:>9.1f}{item.p50_ms:>9.1f}{item.p99_ms:>9.1f}"
        f"{item.tail_ratio:>9.2f}{item.non2xx + item.socket_errors:>9}"
        f"{100 * item.server_cpu_s / seconds:>10.0f}{100 * item.wrk_cpu_s / seconds:>10.0f}"
        f"{rss:>9}  {item.load}"
    )


def loud(item: Round) -> None:
    """A round with failures must not look like a result."""
    if item.bad:
        say("!" * 100)
        say(
            f"!!! {item.server}: {item.non2xx} non-2xx answers and {item.socket_errors} socket "
            f"errors out of {item.requests} requests; first: {item.sample[:200]}"
        )
        say("!" * 100)


def median(values: list[float]) -> float:
    """The median (0 for none)."""
    return statistics.median(values) if values else 0.0


@dataclass
class Report:
    """Everything measured, for the summary and the JSON file."""

    config: dict[str, Any]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    soak: list[dict[str, Any]] = field(default_factory=list)
    flows: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def record(self, item: Round) -> None:
        """Remember a failing round."""
        loud(item)
        if item.bad:
            self.failures.append(
                f"{item.label or item.server}: {item.non2xx} non-2xx, "
                f"{item.socket_errors} socket errors or timeouts (wrk --timeout 10s)"
            )


# ------------------------------------------------------------------------------- the modes


def compare(args: argparse.Namespace, setup: Setup, report: Report) -> None:
    """Reference and product in alternating rounds, for each connection count."""
    reference = start_reference(setup)
    try:
        product = start_product(setup, args.workers)
        try:
            for connections in args.connections:
                compare_at(args, setup, report, reference, product, connections)
            if args.history:
                history(args, setup, report, product)
            if args.profile:
                profile(args, setup, report, product)
        finally:
            product.stop()
    finally:
        reference.stop()


def compare_at(
    args: argparse.Namespace,
    setup: Setup,
    report: Report,
    reference: Server,
    product: Server,
    connections: int,
) -> None:
    """Warm-up, then ``rounds`` pairs (reference, product) at one connection count."""
    say()
    say(
        f"== {setup.backend}, {connections} connections: {args.rounds} rounds x "
        f"{args.duration:g} s, wrk {args.threads} threads, {args.workers} worker(s), "
        f"warm-up {args.warmup:g} s each; load/CPU pressure now {machine_load()}"
    )
    for server in (reference, product):
        warm = drive(
            server,
            setup,
            new_enterprise(product, setup),
            connections=connections,
            duration=args.warmup,
            threads=args.threads,
            label=f"{setup.backend}/{connections}/warm-up/{server.label}",
        )
        report.record(warm)
    say(HEADER)
    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        for server in (reference, product):
            item = drive(
                server,
                setup,
                new_enterprise(product, setup),
                connections=connections,
                duration=args.duration,
                threads=args.threads,
                label=f"{setup.backend}/{connections}/{number}/{server.label}",
            )
            rounds.append(item)
            say(row(str(number), item))
            report.record(item)
    refs = [r for r in rounds if r.server == reference.label]
    prods = [r for r in rounds if r.server == product.label]
    ratio = median([r.rps for r in prods]) / (median([r.rps for r in refs]) or 1)
    tail = median([r.tail_ratio for r in prods])
    summary = {
        "reference_rps": round(median([r.rps for r in refs]), 1),
        "product_rps": round(median([r.rps for r in prods]), 1),
        "ratio": round(ratio, 3),
        "product_p50_ms": round(median([r.p50_ms for r in prods]), 2),
        "product_p99_ms": round(median([r.p99_ms for r in prods]), 2),
        "product_p99_over_p50": round(tail, 2),
        "reference_p50_ms": round(median([r.p50_ms for r in refs]), 2),
        "reference_p99_ms": round(median([r.p99_ms for r in refs]), 2),
        "worker_rss_mb": max(max(r.rss_mb) for r in prods),
        "wrk_cpu_percent": round(max(100 * r.wrk_cpu_s / r.duration for r in rounds), 0),
    }
    say(
        f"median  reference {summary['reference_rps']} req/s, ctt-broker "
        f"{summary['product_rps']} req/s: ratio product/reference {ratio:.2f}x; product "
        f"p99/p50 {tail:.2f} (median of rounds); worker RSS {summary['worker_rss_mb']} MB"
    )
    report.comparisons.append(
        {
            "backend": setup.backend,
            "connections": connections,
            "rounds": [asdict(r) for r in rounds],
            "summary": summary,
        }
    )


def history(args: argparse.Namespace, setup: Setup, report: Report, product: Server) -> None:
    """The product on an enterprise with N old action items against fresh ones, alternating."""
    from sqlalchemy import insert

    from broker.db import action_items, make_engine

    old = new_enterprise(product, setup)
    catalog = [row for row in load_catalog_rows().values() if row["kind"] in ("signin", "consent")]
    columns = set(action_items.c.keys())
    long_ago = datetime.now(UTC) - timedelta(days=400)
    engine = make_engine(setup.database_url)
    started = time.monotonic()
    try:
        with engine.begin() as connection:
            for first in range(0, args.history, 5000):
                rows = []
                for number in range(first, min(first + 5000, args.history)):
                    spec = catalog[number % len(catalog)]
                    created = long_ago + timedelta(minutes=number)
                    values = {
                        "id": new_id("act", created),
                        "handle_hash": secrets.token_hex(32),
                        "provider_id": setup.provider_id,
                        "enterprise_id": old,
                        "action_type": spec["actionType"],
                        "consent_type": spec["consentType"],
                        "callback_url": CALLBACK,
                        "provider_state": None,
                        "result_delivery": "redirect",
                        "reregister": False,
                        "teams_app_package_ids": None,
                        "status": "completed",
                        "error_code": None,
                        "created_at": created,
                        "expires_at": created + timedelta(days=1),
                        "opened_at": created + timedelta(seconds=5),
                        "finished_at": created + timedelta(seconds=30),
                        "revoked_at": None,
                        "updated_at": created + timedelta(seconds=30),
                    }
                    rows.append({k: v for k, v in values.items() if k in columns})
                connection.execute(insert(action_items), rows)
    finally:
        engine.dispose()
    connections = args.connections[0]
    say()
    say(
        f"== {setup.backend}, history: {args.history} completed action items inserted in "
        f"{time.monotonic() - started:.1f} s; ctt-broker alone, {connections} connections, "
        f"alternating fresh enterprise / enterprise with history"
    )
    say(HEADER)
    rounds: dict[str, list[Round]] = {"fresh": [], "history": []}
    for number in range(1, args.rounds + 1):
        for kind in ("fresh", "history"):
            item = drive(
                product,
                setup,
                old if kind == "history" else new_enterprise(product, setup),
                connections=connections,
                duration=args.duration,
                threads=args.threads,
                label=f"{setup.backend}/history/{number}/{kind}",
            )
            item.server = f"{kind}"
            rounds[kind].append(item)
            say(row(str(number), item))
            report.record(item)
    fresh_p50 = median([r.p50_ms for r in rounds["fresh"]])
    old_p50 = median([r.p50_ms for r in rounds["history"]])
    fresh_rps = median([r.rps for r in rounds["fresh"]])
    old_rps = median([r.rps for r in rounds["history"]])
    say(
        f"median p50 {old_p50:.1f} ms with history vs {fresh_p50:.1f} ms fresh: "
        f"{old_p50 / (fresh_p50 or 1):.2f}x time; req/s {old_rps:.1f} vs {fresh_rps:.1f}: "
        f"{fresh_rps / (old_rps or 1):.2f}x time by throughput"
    )
    report.history.append(
        {
            "backend": setup.backend,
            "items": args.history,
            "connections": connections,
            "rounds": {k: [asdict(r) for r in v] for k, v in rounds.items()},
            "p50_ratio": round(old_p50 / (fresh_p50 or 1), 3),
            "throughput_time_ratio": round(fresh_rps / (old_rps or 1), 3),
        }
    )


def py_spy_argv(worker: int, output: Path, rate: int, duration: float | None = None) -> list[str]:
    """``py-spy record`` on ``worker``, collapsed stacks into ``output``.

    It stops after ``duration`` seconds, or without one when interrupted (SIGINT).
    """
    spy = shutil.which("py-spy", path=os.path.dirname(PYTHON)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("py-spy is not installed: pip install -e '.[dev]'")
    output.parent.mkdir(parents=True, exist_ok=True)
    # --gil: only the thread holding the GIL is sampled, so the table shows where the CPU
    # goes, not threads waiting for the database or a lock.
    argv = [spy, "record", "--pid", str(worker), "--rate", str(rate), "--gil", "--nonblocking"]
    if duration is not None:
        argv += ["--duration", f"{int(duration)}"]
    return [*argv, "--format", "raw", "--output", str(output)]


def print_profile(report: Report, backend: str, output: Path, log: Path, **about: Any) -> None:
    """The ``py-spy top``-style table of ``output``, printed and kept in the report."""
    if not output.exists():
        raise BenchError(f"py-spy wrote nothing; see {log}")
    top = summarize_profile(output)
    say(f"py-spy raw (collapsed stacks, opens in speedscope): {output}")
    say(f"{'%own':>7}{'%total':>8}  function (file:line), {top['samples']} samples")
    for line in top["lines"]:
        say(f"{line['own']:>7.1f}{line['total']:>8.1f}  {line['function']}")
    report.profiles.append({"backend": backend, "file": str(output), **about, **top})


def profile(args: argparse.Namespace, setup: Setup, report: Report, product: Server) -> None:
    """One extra product round with ``py-spy record`` attached to the worker."""
    folder = Path(args.profile)
    connections = args.connections[0]
    output = folder / f"profile-{setup.backend}-c{connections}.txt"
    (worker,) = product.workers()[:1]
    argv = py_spy_argv(worker, output, 200, args.duration)
    say()
    say(f"== {setup.backend}: profile round ({' '.join(argv[1:])})")
    with (folder / f"py-spy-{setup.backend}.log").open("wb") as log:
        recorder = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            item = drive(
                product,
                setup,
                new_enterprise(product, setup),
                connections=connections,
                duration=args.duration,
                threads=args.threads,
                label=f"{setup.backend}/profile",
            )
            recorder.wait(timeout=args.duration + 60)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait(timeout=10)
    say(HEADER)
    say(row("prof", item))
    print_profile(report, setup.backend, output, folder / f"py-spy-{setup.backend}.log")


def summarize_profile(path: Path, limit: int = 30) -> dict[str, Any]:
    """``py-spy top``-style table from collapsed stacks: own and total % per function."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text("utf-8", "replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    ranked = sorted(total, key=lambda name: (own[name], total[name]), reverse=True)[:limit]
    by_total = sorted(total, key=lambda name: total[name], reverse=True)[:limit]
    scale = 100 / (samples or 1)
    lines = [
        {"function": name, "own": own[name] * scale, "total": total[name] * scale}
        for name in ranked
    ]
    cumulative = [
        {"function": name, "own": own[name] * scale, "total": total[name] * scale}
        for name in by_total
    ]
    return {"samples": samples, "lines": lines, "by_total": cumulative}


def workers_compare(args: argparse.Namespace, setup: Setup, report: Report) -> None:
    """The product alone with each worker count, in alternating rounds (same database)."""
    servers = [start_product(setup, count, f"ctt-broker x{count}") for count in args.compare]
    try:
        for connections in args.connections:
            say()
            say(
                f"== {setup.backend}, workers {'/'.join(map(str, args.compare))}, {connections} "
                f"connections: {args.rounds} rounds x {args.duration:g} s, wrk {args.threads} "
                f"threads on {os.cpu_count()} CPUs"
            )
            for server in servers:
                report.record(
                    drive(
                        server,
                        setup,
                        new_enterprise(servers[0], setup),
                        connections=connections,
                        duration=args.warmup,
                        threads=args.threads,
                        label=f"{server.label}/warm-up",
                    )
                )
            say(HEADER)
            rounds: list[Round] = []
            for number in range(1, args.rounds + 1):
                for server in servers:
                    item = drive(
                        server,
                        setup,
                        new_enterprise(servers[0], setup),
                        connections=connections,
                        duration=args.duration,
                        threads=args.threads,
                        label=f"{server.label}/{connections}/{number}",
                    )
                    rounds.append(item)
                    say(row(str(number), item))
                    report.record(item)
            rates = {
                server.label: median([r.rps for r in rounds if r.server == server.label])
                for server in servers
            }
            first = rates[servers[0].label] or 1
            wrk_cpu = max(100 * r.wrk_cpu_s / r.duration for r in rounds)
            busy = max(100 * (r.server_cpu_s + r.wrk_cpu_s) / r.duration for r in rounds)
            say(
                "median req/s "
                + ", ".join(f"{k} {v:.1f} ({v / first:.2f}x)" for k, v in rates.items())
                + f"; wrk used up to {wrk_cpu:.0f}% of a CPU, wrk + workers up to {busy:.0f}% "
                f"of {100 * (os.cpu_count() or 1)}%"
            )
            report.workers.append(
                {
                    "backend": setup.backend,
                    "connections": connections,
                    "rates": rates,
                    "ratios": {k: round(v / first, 3) for k, v in rates.items()},
                    "max_wrk_cpu_percent": round(wrk_cpu),
                    "max_busy_percent": round(busy),
                    "rounds": [asdict(r) for r in rounds],
                }
            )
    finally:
        for server in servers:
            server.stop()


def soak(args: argparse.Namespace, setup: Setup, report: Report) -> None:
    """One long product-only wrk run; the worker's RSS every 10 s."""
    product = start_product(setup, args.workers)
    try:
        connections = args.connections[0]
        enterprise = new_enterprise(product, setup)
        say()
        say(f"== {setup.backend}, soak: {args.soak:g} s, {connections} connections")
        body = request_body(enterprise)
        url = f"{product.url}/enterprise/getActionItemUrl"
        series: list[tuple[float, list[float]]] = [(0.0, product.rss())]
        say(f"{'t s':>6}  RSS MB (per worker)")
        say(f"{0:>6.0f}  {series[0][1]}")
        outcome: dict[str, Any] = {}

        def run() -> None:
            outcome.update(wrk(url, body, setup.api_key, args.soak, connections, args.threads))

        import threading

        started = time.monotonic()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        next_sample = started + 10
        while thread.is_alive():
            thread.join(timeout=max(0.0, next_sample - time.monotonic()))
            if time.monotonic() >= next_sample and thread.is_alive():
                sample = (round(time.monotonic() - started), product.rss())
                series.append(sample)
                say(f"{sample[0]:>6.0f}  {sample[1]}")
                next_sample += 10
        thread.join(timeout=args.soak + 90)
        series.append((round(time.monotonic() - started), product.rss()))
        say(f"{series[-1][0]:>6.0f}  {series[-1][1]}  (after)")
        if not outcome:
            raise BenchError("the soak's wrk run failed")
        say(
            f"soak: {outcome['rps']:.1f} req/s, p50 {outcome['p50_us'] / 1000:.1f} ms, p99 "
            f"{outcome['p99_us'] / 1000:.1f} ms, non-2xx {outcome['non2xx']}"
        )
        if outcome["non2xx"]:
            report.failures.append(f"{setup.backend}/soak: {outcome['non2xx']} non-2xx")
            say(f"!!! soak had {outcome['non2xx']} non-2xx answers: {outcome['sample'][:200]}")
        report.soak.append(
            {
                "backend": setup.backend,
                "seconds": args.soak,
                "connections": connections,
                "rss_series": series,
                "wrk": outcome,
            }
        )
    finally:
        product.stop()


# ------------------------------------------------------------------------------ admin flows


def serve_emulator(port: int, broker_url: str) -> None:
    """The Microsoft emulator in this process (``--serve-emulator``), for the flows mode."""
    import uvicorn

    from broker.catalog import load_catalog
    from emulator import Emulator, create_emulator_app
    from sandbox.emulator_setup import emulator_config_for

    config = emulator_config_for(
        load_catalog(),
        f"{broker_url}/oauth/callback",
        issuer_base_url="https://login.emulator.test",
        browser_base_url=f"http://127.0.0.1:{port}",
    )
    uvicorn.run(
        create_emulator_app(Emulator(config)),
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
    )


STEPS = ("launch", "callback", "redeem")
FLOW_KINDS = (("sign-in", "LOGIN_ENTERPRISE_ADMIN"), ("consent", "GET_PRESENCE_CONSENT"))


def one_flow(
    api: httpx.Client,
    enterprise_id: str,
    action_type: str,
    steps: dict[str, float] | None = None,
    worker: int | None = None,
) -> None:
    """getActionItemUrl, launch, the emulator's pages, the callback, redeem.

    With ``steps`` and the ``worker``'s pid, each broker step's CPU (seconds) is added
    to ``steps``: the worker is idle between steps (the emulator is another process).
    """
    from emulator import complete_browser_flow

    def step(name: str, send: Any) -> httpx.Response:
        if steps is None or worker is None:
            return cast(httpx.Response, send())
        before = cpu_seconds(worker)
        answer = cast(httpx.Response, send())
        steps[name] += cpu_seconds(worker) - before
        return answer

    link = api.post(
        "/enterprise/getActionItemUrl",
        json={"actionType": action_type, "enterpriseId": enterprise_id, "callbackUrl": CALLBACK},
    )
    if link.status_code != 201:
        raise BenchError(f"getActionItemUrl answered {link.status_code}: {link.text[:300]}")
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        launched = step("launch", lambda: browser.get(link.json()["url"]))
        if launched.status_code not in (302, 303):
            raise BenchError(f"the link answered {launched.status_code}: {launched.text[:300]}")
        result = complete_browser_flow(browser, launched.headers["location"], username=ADMIN)
        answer = step(
            "callback", lambda: browser.get(result.redirect_uri, params=dict(result.params))
        )
    if answer.status_code not in (302, 303):
        raise BenchError(f"the callback answered {answer.status_code}: {answer.text[:300]}")
    query = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
    if query.get("status") != "completed":
        raise BenchError(f"{action_type} did not complete: {query}")
    redeemed = step(
        "redeem", lambda: api.post("/results/redeem", json={"resultCode": query["resultCode"]})
    )
    if redeemed.status_code != 200:
        raise BenchError(f"redeem answered {redeemed.status_code}: {redeemed.text[:300]}")


# What sandbox mode turns on and production leaves off, off for the flows: the flows measure
# the broker providers run (response validation cost 0-5 ms of a 25-30 ms flow in back-to-back
# runs on one day: small next to the noise, but not production's work).
FLOW_PRODUCTION_SETTINGS = {"CTT_VALIDATE_RESPONSES": "0", "CTT_SWAGGER_UI": "0"}


def flows(args: argparse.Namespace, backend: str, url: str, work: Path, report: Report) -> None:
    """Broker CPU per full admin flow (sign-in, consent), emulator in its own process."""
    broker_port, emulator_port = free_port(), free_port()
    broker_url = f"http://127.0.0.1:{broker_port}"
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    setup = prepare(
        backend,
        url,
        work,
        {
            # CTT_LOGIN_TRANSPORT_URL (the emulator over plain http) is sandbox-only; the
            # sandbox-only costs are off as in production (--set turns them back on).
            "CTT_MODE": "sandbox",
            **FLOW_PRODUCTION_SETTINGS,
            "CTT_LOG_LEVEL": args.log_level,
            "CTT_PUBLIC_BASE_URL": broker_url,
            "CTT_LOGIN_BROWSER_URL": emulator_url,
            "CTT_LOGIN_TRANSPORT_URL": emulator_url,
        },
    )
    where = ["--broker-url", broker_url]
    emulator = Process(
        "emulator",
        [PYTHON, str(Path(__file__).resolve()), "--serve-emulator", str(emulator_port), *where],
        setup.env,
        work,
    )
    try:
        emulator.wait_http(f"{emulator_url}/common/v2.0/.well-known/openid-configuration")
        product = start_product(setup, 1, port=broker_port)
        try:
            flows_on(args, setup, report, product)
        finally:
            product.stop()
    finally:
        emulator.stop()


def stack_floor(api: httpx.Client, worker: int, count: int) -> float:
    """The worker's CPU (ms) per flow's three requests, each refused by its handler at once.

    Each fails its handler's first check: the link's shape, the callback's fields, the
    result code's prefix (after the key lookup, as every API request). Sent as the flows
    send them (the browser's two on a connection of their own), so they cost what any
    launch, callback and redeem pays around its own work. Measured again for each kind
    of flow: two samples of the same thing, side by side with each kind's steps.
    """
    not_a_code = {"resultCode": "not-a-result-code"}
    before = cpu_seconds(worker)
    for _ in range(count):
        with httpx.Client(base_url=api.base_url, follow_redirects=False, timeout=30) as browser:
            for path, expected in (("/actions/0", 404), ("/oauth/callback", 400)):
                answer = browser.get(path)
                if answer.status_code != expected:
                    raise BenchError(f"GET {path} answered {answer.status_code}, not {expected}")
        answer = api.post("/results/redeem", json=not_a_code)
        if answer.status_code != 404:
            raise BenchError(f"redeem of a non-code answered {answer.status_code}, not 404")
    return (cpu_seconds(worker) - before) * 1000 / count


def chosen_flow_settings() -> dict[str, str]:
    """The flows' settings: production's for those above, then whatever ``--set`` said."""
    return {**FLOW_PRODUCTION_SETTINGS, **EXTRA_SETTINGS}


def flow_settings() -> str:
    """What the flows ran with of the settings production and sandbox mode set apart."""
    chosen = chosen_flow_settings()
    said = " ".join(f"{name}={chosen[name]}" for name in FLOW_PRODUCTION_SETTINGS)
    same = all(chosen[name] == FLOW_PRODUCTION_SETTINGS[name] for name in FLOW_PRODUCTION_SETTINGS)
    return f"as in production: {said}" if same else f"changed by --set: {said}"


def flows_on(args: argparse.Namespace, setup: Setup, report: Report, product: Server) -> None:
    """Warm up, then time N flows of each kind and N bare getActionItemUrl calls."""
    enterprise = new_enterprise(product, setup)
    headers = {"Authorization": f"Bearer {setup.api_key}"}
    say()
    say(
        f"== {setup.backend}, admin flows: {args.flows} of each kind, ctt-broker 1 worker "
        "(sandbox mode: the emulator is reached over CTT_LOGIN_TRANSPORT_URL, sandbox only; "
        f"{flow_settings()}), "
        f"CTT_LOG_LEVEL={args.log_level}; CPU = the worker's utime+stime from /proc"
    )
    with httpx.Client(base_url=product.url, headers=headers, timeout=30) as api:
        one_flow(api, enterprise, "REGISTRATION")
        for _ in range(args.flow_warmup):
            for _, action in FLOW_KINDS:
                one_flow(api, enterprise, action)
        (worker,) = product.workers()
        before = cpu_seconds(worker)
        time.sleep(3)
        idle_ms_per_s = (cpu_seconds(worker) - before) * 1000 / 3
        results = []
        for kind, action in FLOW_KINDS:
            before, clock = cpu_seconds(worker), time.monotonic()
            steps = dict.fromkeys(STEPS, 0.0)
            for _ in range(args.flows):
                one_flow(api, enterprise, action, steps, worker)
            flow_ms = (cpu_seconds(worker) - before) * 1000 / args.flows
            flow_wall = (time.monotonic() - clock) * 1000 / args.flows
            before = cpu_seconds(worker)
            for _ in range(args.flows):
                link = api.post(
                    "/enterprise/getActionItemUrl",
                    json={
                        "actionType": action,
                        "enterpriseId": enterprise,
                        "callbackUrl": CALLBACK,
                    },
                )
                if link.status_code != 201:
                    raise BenchError(f"getActionItemUrl answered {link.status_code}")
            link_ms = (cpu_seconds(worker) - before) * 1000 / args.flows
            floor_ms = stack_floor(api, worker, args.flows)
            results.append(
                {
                    "kind": kind,
                    "action_type": action,
                    "flows": args.flows,
                    "cpu_ms_per_flow": round(flow_ms, 2),
                    "cpu_ms_per_get_action_item_url": round(link_ms, 2),
                    "cpu_ms_per_flow_without_link": round(flow_ms - link_ms, 2),
                    "cpu_ms_per_step": {
                        name: round(steps[name] * 1000 / args.flows, 2) for name in STEPS
                    },
                    "wall_ms_per_flow": round(flow_wall, 1),
                    "cpu_ms_stack_floor": round(floor_ms, 2),
                }
            )
    say(
        f"idle worker: {idle_ms_per_s:.1f} ms CPU per second over 3 s (not subtracted: about "
        f"{idle_ms_per_s * results[0]['wall_ms_per_flow'] / 1000:.1f} ms of a sign-in's wall time)"
    )
    say(
        f"{'flow':<10}{'action type':<26}{'CPU ms/flow':>12}{'getActionItemUrl':>18}"
        f"{'without it':>12}{'wall ms':>9}"
    )
    for item in results:
        say(
            f"{item['kind']:<10}{item['action_type']:<26}{item['cpu_ms_per_flow']:>12.2f}"
            f"{item['cpu_ms_per_get_action_item_url']:>18.2f}"
            f"{item['cpu_ms_per_flow_without_link']:>12.2f}{item['wall_ms_per_flow']:>9.1f}"
        )
    say(
        f"{'per step':<36}"
        + "".join(f"{name:>12}" for name in STEPS)
        + f"{'between':>12}{'stack floor':>13}"
    )
    for item in results:
        per_step = item["cpu_ms_per_step"]
        between = item["cpu_ms_per_flow_without_link"] - sum(per_step.values())
        say(
            f"{item['kind']:<10}{item['action_type']:<26}"
            + "".join(f"{per_step[name]:>12.2f}" for name in STEPS)
            + f"{between:>12.2f}{item['cpu_ms_stack_floor']:>13.2f}"
        )
    say(
        "(getActionItemUrl's own CPU is measured by a separate run of the same number of calls "
        "and subtracted; 'without it' = launch + callback + redeem. Per step: the worker's CPU "
        "across each request of the flows above; 'between' is the rest of 'without it' (work "
        "after an answer was read, idle CPU while the emulator, another process, served its "
        f"pages; it can be negative: the clock ticks every {1000 / CLOCK_TICKS:.0f} ms). "
        "'stack floor': the same three requests refused at once (a link of the wrong shape, "
        "the callback without Microsoft's fields, a result code of the wrong shape), each "
        "through the whole stack to its handler: the part of 'without it' that is the server, "
        "middleware, "
        "routing, validation, authentication and thread hops rather than a flow's work.)"
    )
    report.flows.append(
        {
            "backend": setup.backend,
            "settings": chosen_flow_settings(),
            "idle_ms_per_s": round(idle_ms_per_s, 3),
            "kinds": results,
        }
    )
    if args.profile:
        with httpx.Client(base_url=product.url, headers=headers, timeout=30) as api:
            for kind, action in FLOW_KINDS:
                profile_flows(args, setup, report, api, worker, enterprise, kind, action)


def profile_flows(
    args: argparse.Namespace,
    setup: Setup,
    report: Report,
    api: httpx.Client,
    worker: int,
    enterprise: str,
    kind: str,
    action: str,
) -> None:
    """N more flows of one kind with ``py-spy record`` attached to the worker.

    The profile covers the whole flow, getActionItemUrl included; the handlers'
    frames (``_launch_action``, ``_complete_callback``, ``redeem_result``) tell the
    steps apart in the collapsed stacks.
    """
    folder = Path(args.profile)
    output = folder / f"profile-{setup.backend}-flows-{kind}.txt"
    log_path = folder / f"py-spy-{setup.backend}-flows-{kind}.log"
    argv = py_spy_argv(worker, output, 1000)
    say()
    say(f"== {setup.backend}: profile, {args.flows} flows of {action} ({' '.join(argv[1:])})")
    with log_path.open("wb") as log:
        recorder = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            time.sleep(1)  # py-spy attaches before the first flow
            for _ in range(args.flows):
                one_flow(api, enterprise, action)
        finally:
            recorder.send_signal(signal.SIGINT)  # py-spy writes what it recorded, then exits
            try:
                recorder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait(timeout=10)
    print_profile(report, setup.backend, output, log_path, flows=kind)


# ------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options (see the README's Benchmark section)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )

    def numbers(text: str) -> list[int]:
        return [int(part) for part in text.split(",") if part.strip()]

    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument("--connections", type=numbers, default=[32, 64], help="e.g. 32,64")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per server")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of the warm-up round")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers of the product")
    parser.add_argument(
        "--mode",
        choices=("production", "sandbox"),
        default="production",
        help="CTT_MODE of the product (flows always run in sandbox mode)",
    )
    parser.add_argument("--log-level", default="WARNING", help="CTT_LOG_LEVEL of the product")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CTT_NAME=VALUE",
        help="another product setting, in every mode (repeatable)",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("CTT_TEST_POSTGRES_URL", POSTGRES))
    parser.add_argument("--json", metavar="FILE", help="write every result as JSON here")
    parser.add_argument(
        "--history", type=int, default=0, metavar="N", help="also compare N old items vs fresh"
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy one extra product round")
    parser.add_argument(
        "--workers-compare",
        dest="compare",
        type=numbers,
        metavar="1,2",
        help="product alone with these worker counts (PostgreSQL)",
    )
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="one long product run")
    parser.add_argument("--flows", type=int, metavar="N", help="broker CPU per admin flow")
    parser.add_argument("--flow-warmup", type=int, default=5, help="warm-up flows of each kind")
    parser.add_argument("--smoke", action="store_true", help="1 round x 1 s, 4 connections, SQLite")
    parser.add_argument("--serve-emulator", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--broker-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for assignment in args.set:
        name, sep, value = assignment.partition("=")
        if not (sep and name.startswith("CTT_")):
            parser.error(f"--set takes CTT_NAME=VALUE, not {assignment!r}")
        EXTRA_SETTINGS[name] = value
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1.0, 1.0
        args.connections, args.backends = [4], "sqlite"
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if args.compare:
        args.backends = ["postgresql"]
    unknown = set(args.backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if sum(bool(x) for x in (args.compare, args.soak, args.flows)) > 1:
        parser.error("--workers-compare, --soak and --flows are separate runs: pick one")
    if not (args.rounds >= 1 and 0 < args.duration <= 600 and args.connections):
        parser.error("--rounds >= 1, 0 < --duration <= 600 and some --connections")
    return args


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """What the numbers were measured on."""
    commit = subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    dirty = subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    version = subprocess.run(  # noqa: S603
        [shutil.which("wrk") or "wrk", "-v"], capture_output=True, text=True, timeout=10
    )
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit + ("+dirty" if dirty else ""),
        "tree": str(ROOT),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "wrk": ((version.stdout + version.stderr).splitlines() or [""])[0],
    }


def run(args: argparse.Namespace) -> Report:
    """Every backend in turn, in the mode asked for."""
    report = Report(config={**vars(args), "environment": environment(args)})
    env = report.config["environment"]
    say(
        f"ctt-broker benchmark: tree {env['tree']} at {env['commit']}, {env['cpus']} CPUs, "
        f"{env['machine']}, Python {env['python']}, {env['wrk']}"
    )
    if not args.flows:
        say(
            f"product: ctt-broker serve, CTT_MODE={args.mode}"
            f", CTT_LOG_LEVEL={args.log_level} (request logs off: measured without log output), "
            f"rate limits {HIGH_RATE}; body: REGISTRATION on a fresh enterprise per round"
        )
    if EXTRA_SETTINGS:
        say(
            "product settings from --set: "
            + ", ".join(f"{k}={v}" for k, v in EXTRA_SETTINGS.items())
        )
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix=f"ctt-bench-{backend}-") as folder:
            work = Path(folder)
            with database(backend, work, args.postgres_url) as url:
                if args.flows:
                    flows(args, backend, url, work, report)
                    continue
                settings = {"CTT_MODE": args.mode, "CTT_LOG_LEVEL": args.log_level}
                if args.mode == "production":
                    settings["CTT_PUBLIC_BASE_URL"] = PUBLIC
                    settings.update(write_secret_files(work / "secrets"))
                setup = prepare(backend, url, work, settings)
                if args.compare:
                    workers_compare(args, setup, report)
                elif args.soak:
                    soak(args, setup, report)
                else:
                    compare(args, setup, report)
    return report


def print_summary(report: Report) -> None:
    """The final table of the comparison mode."""
    if not report.comparisons:
        return
    say()
    say("== summary (medians of the rounds)")
    say(
        f"{'backend':<12}{'conns':>6}{'ref req/s':>11}{'product req/s':>15}{'ratio':>8}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'p99/p50':>9}{'RSS MB':>8}{'wrk CPU%':>10}"
    )
    for item in report.comparisons:
        s = item["summary"]
        say(
            f"{item['backend']:<12}{item['connections']:>6}{s['reference_rps']:>11.1f}"
            f"{s['product_rps']:>15.1f}{s['ratio']:>7.2f}x{s['product_p50_ms']:>9.1f}"
            f"{s['product_p99_ms']:>9.1f}{s['product_p99_over_p50']:>9.2f}"
            f"{s['worker_rss_mb']:>8.0f}{s['wrk_cpu_percent']:>10.0f}"
        )
    say("(p50, p99, p99/p50 and RSS are the product's; RSS is the worker's after each round, max)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every answer was 2xx, 1 otherwise, 2 when it could not run."""
    args = parse_args(argv)
    if args.serve_emulator:
        serve_emulator(args.serve_emulator, args.broker_url)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = run(args)
    except BenchError as exc:
        say(f"bench: {exc}")
        return 2
    print_summary(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        document = {**asdict(report), "ok": not report.failures}
        Path(args.json).write_text(json.dumps(document, indent=2, default=str))
        say(f"JSON written to {args.json}")
    if report.failures:
        say(f"!!! {len(report.failures)} rounds had answers that were not 2xx, or none:")
        for failure in report.failures:
            say(f"!!!   {failure}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
