"""The ``ctt-broker`` console command.

    ctt-broker serve [--bind HOST:PORT] [--workers N]
    ctt-broker db upgrade | db status
    ctt-broker provider create NAME [--callback URL ...] [--webhook-url URL] [--development]
                               [--share-refresh-token]
    ctt-broker provider list
    ctt-broker provider rotate-key PROVIDER [--overlap SECONDS]
    ctt-broker provider revoke-key PROVIDER KEY_ID
    ctt-broker provider add-callback PROVIDER URL
    ctt-broker provider remove-callback PROVIDER URL
    ctt-broker sandbox-provider
    ctt-broker provider set-webhook PROVIDER (URL | --clear) [--include-tokens]
    ctt-broker provider set-branding PROVIDER [--display-name TEXT] [--portal-url URL]
                                     [--logo-url URL]
    ctt-broker provider rotate-webhook-secret PROVIDER [--overlap SECONDS]
    ctt-broker provider redeliver-webhooks PROVIDER [--since TIME] [--until TIME] [--pending-only]
    ctt-broker worker [--once] [--interval SECONDS]
    ctt-broker microsoft check

PROVIDER is a provider id (``prv_...``) or name. Every error names the database
(CTT_DATA_DIR or CTT_DATABASE_URL). Exit codes: 0 done, 1 refused
(the message carries the error code), 2 bad arguments, 3 invalid settings,
4 database schema not current.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from broker import errors, providers
from broker.metrics import MULTIPROC_ENV, reset_multiprocess_dir
from broker.migrate import pending_revisions, upgrade_database
from broker.observability import configure_logging
from broker.retention import enforce_retention
from broker.runtime import Runtime, open_runtime
from broker.settings import Settings, SettingsError, load_settings
from broker.webhook_queue import enqueue_new_events, redeliver_pending
from broker.webhook_secrets import ensure_webhook_secret, rotate_webhook_secret
from broker.webhook_sender import LEASE_MARGIN_SECONDS, DeliveryLoop, WebhookSender, deliver_due

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_SETTINGS = 3
EXIT_SCHEMA = 4
DELIVERY_POLL_SECONDS = 1.0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the README check)."""
    parser = argparse.ArgumentParser(prog="ctt-broker", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API with gunicorn and uvicorn workers")
    serve.add_argument("--bind", help="HOST:PORT (default: CTT_BIND)")
    serve.add_argument("--workers", type=int, help="worker processes (default: CTT_WORKERS)")

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    db.add_parser("upgrade", help="apply every pending migration")
    db.add_parser("status", help="list pending migrations (exit 4 if any)")

    provider = commands.add_parser("provider", help="manage providers").add_subparsers(
        dest="provider_command", required=True, metavar="ACTION"
    )
    create = provider.add_parser("create", help="create a provider and print its first API key")
    create.add_argument("name")
    create.add_argument("--callback", action="append", default=[], metavar="URL")
    create.add_argument("--webhook-url", metavar="URL")
    create.add_argument(
        "--development", action="store_true", help="allow http callbacks on loopback hosts"
    )
    create.add_argument(
        "--share-refresh-token",
        action="store_true",
        help="include the refresh token in redeemed sign-in results",
    )
    provider.add_parser("list", help="list providers, their callbacks and keys (never secrets)")
    rotate = provider.add_parser("rotate-key", help="issue a new key; old keys expire later")
    rotate.add_argument("provider")
    rotate.add_argument(
        "--overlap",
        type=int,
        metavar="SECONDS",
        help="how long current keys stay valid (default: CTT_KEY_ROTATION_OVERLAP_SECONDS)",
    )
    revoke = provider.add_parser("revoke-key", help="revoke one key at once")
    revoke.add_argument("provider")
    revoke.add_argument("key_id")
    hook = provider.add_parser("set-webhook", help="set or clear the webhook URL")
    hook.add_argument("provider")
    hook.add_argument("url", nargs="?")
    hook.add_argument("--clear", action="store_true", help="stop sending webhooks")
    hook.add_argument(
        "--include-tokens",
        action="store_true",
        help="put the MSAL result (never the refresh token unless shared) in sign-in events",
    )
    brand = provider.add_parser(
        "set-branding",
        help="the name, portal link and logo the admin's pages show (omitted ones are cleared)",
    )
    brand.add_argument("provider")
    brand.add_argument("--display-name", metavar="TEXT", help="your name as admins know it")
    brand.add_argument("--portal-url", metavar="URL", help="https: where 'Back to' leads")
    brand.add_argument("--logo-url", metavar="URL", help="https: an image shown on the pages")
    secret = provider.add_parser(
        "rotate-webhook-secret", help="new signing secret; the old one signs too for a while"
    )
    secret.add_argument("provider")
    secret.add_argument("--overlap", type=int, default=86400, metavar="SECONDS")
    again = provider.add_parser(
        "redeliver-webhooks", help="make every pending and failed webhook due now"
    )
    again.add_argument("provider")
    again.add_argument("--since", metavar="TIME", help="events created at or after")
    again.add_argument("--until", metavar="TIME", help="events created before")
    again.add_argument("--pending-only", action="store_true", help="leave failed ones alone")
    for name, verb in (("add-callback", "allow"), ("remove-callback", "stop allowing")):
        sub = provider.add_parser(name, help=f"{verb} a callback URL")
        sub.add_argument("provider")
        sub.add_argument("url")
    worker = commands.add_parser(
        "worker",
        help="background jobs: deliver webhooks, confirm pending consents, fail interrupted "
        "flows, purge spent results, enforce retention",
    )
    worker.add_argument("--once", action="store_true", help="one pass, then exit")
    worker.add_argument("--interval", type=float, default=10.0, metavar="SECONDS")
    microsoft = commands.add_parser("microsoft", help="the Microsoft side").add_subparsers(
        dest="microsoft_command", required=True, metavar="ACTION"
    )
    microsoft.add_parser(
        "check", help="an app-only token per configured app in its home tenant; exit 1 if any fails"
    )
    commands.add_parser(
        "sandbox-provider",
        help="sandbox only: create the demo provider once and show its API key",
    )
    for sub in (create, rotate, revoke):
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one command; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        print(f"ctt-broker: {exc}", file=err)
        return EXIT_SETTINGS
    if args.command == "serve":
        return _serve(settings, args, env, err)
    if args.command == "microsoft":
        return _microsoft_check(settings, out)
    if args.command == "worker":
        if env is None:  # the console command: JSON lines like the server's
            configure_logging(settings.log_level)
        return _worker(settings, args, out, err)
    runtime = open_runtime(settings, with_microsoft=False)
    try:
        if args.command == "db":
            return _db(runtime, args.db_command, out)
        if args.command == "sandbox-provider":
            upgrade_database(runtime.engine)
            return _sandbox_provider(runtime, out)
        if pending_revisions(runtime.engine):
            print(_schema_not_current(settings), file=err)
            return EXIT_SCHEMA
        return _provider(runtime, args, out)
    except errors.BrokerError as exc:
        print(f"ctt-broker: {exc.code}: {exc.detail} {_database(settings)}", file=err)
        return EXIT_REFUSED
    finally:
        runtime.engine.dispose()


def _microsoft_check(settings: Settings, out: TextIO) -> int:
    """One line per app: what works, or the AADSTS code and Microsoft's fix."""
    runtime = open_runtime(settings)
    try:
        failed = 0
        for app in runtime.credentials.apps:
            check = runtime.microsoft.check_app(app)
            where = f"{check.client_id} in {check.tenant or '?'}"
            if check.ok:
                print(f"ok     {app} ({where}): {check.detail}", file=out)
                continue
            failed += 1
            code = f" AADSTS{check.aadsts}" if check.aadsts else ""
            print(f"FAILED {app} ({where}):{code} {check.detail}", file=out)
            if check.fix:
                print(f"       fix: {check.fix}", file=out)
        total = len(runtime.credentials.apps)
        print(f"{total - failed} of {total} apps ok", file=out)
        return EXIT_REFUSED if failed else 0
    finally:
        runtime.engine.dispose()


def _database(settings: Settings) -> str:
    """Which database a command used: an answer is only meaningful with it."""
    return f"(database {settings.database_url_redacted})"


def _schema_not_current(settings: Settings) -> str:
    return (
        f"ctt-broker: the database schema is not current {_database(settings)}; "
        "run `ctt-broker db upgrade` (CTT_DATA_DIR or CTT_DATABASE_URL picks the database)"
    )


def _worker(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not 0.5 <= args.interval <= 3600:
        print("ctt-broker: --interval must be between 0.5 and 3600 seconds", file=err)
        return EXIT_USAGE
    runtime = open_runtime(settings)
    try:
        if pending_revisions(runtime.engine):
            print(_schema_not_current(settings), file=err)
            return EXIT_SCHEMA
        sender = WebhookSender.for_runtime(runtime)
        if args.once:
            jobs_ok = _run_jobs(runtime, out, err, always=True)
            enqueue_new_events(runtime)
            sent = deliver_due(runtime, sender, max_parallel=settings.webhook_concurrency)
            print(f"worker: webhooks {sent.delivered}/{sent.attempted} delivered", file=out)
            return 0 if jobs_ok else EXIT_REFUSED
        stop = threading.Event()
        with _stop_on_signals(stop):
            run_worker_loops(runtime, sender, interval=args.interval, out=out, err=err, stop=stop)
        print("worker: stopped; deliveries in flight finished", file=out, flush=True)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        runtime.engine.dispose()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop``: the loops end their pass and deliveries in flight finish.

    Dying mid-attempt would leave its lease to run out and the webhook to be sent
    again later; finishing records the attempt (each is bounded by its deadline,
    well inside an orchestrator's grace period).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        number: signal.signal(number, lambda *_: stop.set())
        for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_worker_loops(
    runtime: Runtime,
    sender: WebhookSender,
    *,
    interval: float,
    out: TextIO,
    err: TextIO,
    stop: threading.Event | None = None,
) -> None:
    """Deliveries and background jobs in separate loops: neither ever waits for the other.

    The delivery loop runs in its own thread (with its own bounded pool); the
    jobs run here every ``interval`` seconds until ``stop`` is set.
    """
    stop = stop or threading.Event()
    deliveries = DeliveryLoop(runtime, sender, concurrency=runtime.settings.webhook_concurrency)
    stopping = threading.Event()
    thread = threading.Thread(
        target=deliveries.run,
        args=(stopping, DELIVERY_POLL_SECONDS),
        name="webhook-deliveries",
        daemon=True,
    )
    thread.start()
    try:
        while True:
            _run_jobs(runtime, out, err)
            if stop.wait(interval):
                return
    finally:
        stopping.set()
        thread.join(timeout=sender.deadline_seconds + LEASE_MARGIN_SECONDS)
        deliveries.close()


def _run_jobs(runtime: Runtime, out: TextIO, err: TextIO, *, always: bool = False) -> bool:
    """One pass of the background jobs; each runs even if another failed. True if all ran."""
    from broker.confirmations import confirm_pending
    from broker.lifecycle import fail_abandoned_flows
    from broker.outcomes import purge_expired

    report: list[str] = []
    ok = True

    def job(name: str, run: Callable[[], str | None]) -> None:
        nonlocal ok
        try:
            line = run()
        except Exception as exc:  # keep working: the next pass may succeed
            print(f"worker: {name} failed ({type(exc).__name__})", file=err, flush=True)
            ok = False
            return
        if line:
            report.append(line)

    def confirm() -> str | None:
        done = confirm_pending(runtime)
        return (
            f"checked {done.checked} pending consents ({done.granted} granted, "
            f"{done.failed} failed)"
            if done.checked or always
            else None
        )

    def fail_abandoned() -> str | None:
        failed = fail_abandoned_flows(runtime)
        return f"failed {failed} interrupted flows" if failed or always else None

    def purge() -> str | None:
        purged = purge_expired(runtime)
        return f"purged {purged}" if purged or always else None

    def retain() -> str | None:
        kept = enforce_retention(runtime)
        return f"retention removed {kept.total}" if kept.total or always else None

    job("consent confirmation", confirm)
    # Before purging and retention: an interrupted flow's record is what it needs.
    job("interrupted flows", fail_abandoned)
    job("purge", purge)
    job("retention", retain)
    if report:
        print("worker: " + ", ".join(report), file=out, flush=True)
    return ok


def _db(runtime: Runtime, action: str, out: TextIO) -> int:
    if action == "upgrade":
        upgrade_database(runtime.engine)
        print(f"database {runtime.settings.database_url_redacted} is current", file=out)
        return 0
    pending = pending_revisions(runtime.engine)
    print(
        f"database {runtime.settings.database_url_redacted}: pending "
        + (", ".join(pending) if pending else "none"),
        file=out,
    )
    return EXIT_SCHEMA if pending else 0


def _provider(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    action = args.provider_command
    if action == "create":
        provider, key = providers.create_provider(
            runtime,
            args.name,
            development=args.development,
            callback_urls=tuple(args.callback),
            webhook_url=args.webhook_url,
            share_refresh_token=args.share_refresh_token,
        )
        code = _print_key(out, args.json, provider.provider_id, provider.name, key)
        if args.webhook_url:
            fresh = ensure_webhook_secret(runtime, provider.provider_id)
            if fresh and not args.json:
                print(f"webhook secret {fresh}", file=out)
        return code
    if action == "list":
        now = runtime.now()
        listing = [_provider_summary(p, now) for p in providers.list_providers(runtime)]
        print(json.dumps(listing, indent=2), file=out)
        return 0
    if action == "rotate-key":
        overlap = (
            args.overlap
            if args.overlap is not None
            else runtime.settings.key_rotation_overlap_seconds
        )
        key = providers.rotate_key(runtime, args.provider, overlap_seconds=overlap)
        provider = providers.get_provider(runtime, args.provider)
        return _print_key(out, args.json, provider.provider_id, provider.name, key)
    if action == "revoke-key":
        providers.revoke_key(runtime, args.provider, args.key_id)
        print(f"revoked {args.key_id}", file=out)
        return 0
    if action == "set-webhook":
        return _set_webhook(runtime, args, out)
    if action == "set-branding":
        branding = providers.set_branding(
            runtime,
            args.provider,
            display_name=args.display_name,
            portal_url=args.portal_url,
            logo_url=args.logo_url,
        )
        shown = {
            "displayName": branding.display_name if branding else None,
            "portalUrl": branding.portal_url if branding else None,
            "logoUrl": branding.logo_url if branding else None,
        }
        print(json.dumps(shown), file=out)
        return 0
    if action == "rotate-webhook-secret":
        provider = providers.get_provider(runtime, args.provider)
        fresh = rotate_webhook_secret(runtime, provider.provider_id, overlap_seconds=args.overlap)
        print(f"webhook secret {fresh}", file=out)
        print("Shown only now. Old secrets keep signing during the overlap.", file=out)
        return 0
    if action == "redeliver-webhooks":
        provider = providers.get_provider(runtime, args.provider)
        count = redeliver_pending(
            runtime,
            provider.provider_id,
            since=args.since,
            until=args.until,
            include_failed=not args.pending_only,
        )
        print(f"{count} webhook deliveries of {provider.name} are due now", file=out)
        return 0
    if action == "add-callback":
        print(f"allowed {providers.add_callback(runtime, args.provider, args.url)}", file=out)
        return 0
    providers.remove_callback(runtime, args.provider, args.url)
    print(f"removed {args.url}", file=out)
    return 0


SANDBOX_PROVIDER = "Sandbox Provider"
SANDBOX_CALLBACKS = (
    "http://127.0.0.1:8090/callback",
    "http://localhost:8090/callback",
    # The README walkthrough's callback: the sandbox's receiver only prints what arrives,
    # so the reader redeems the result code themselves.
    "http://127.0.0.1:8090/walkthrough",
)
SANDBOX_WEBHOOK = "http://127.0.0.1:8090/webhooks"


def _sandbox_provider(runtime: Runtime, out: TextIO) -> int:
    """Create the demo provider on first use; its key lives in the data folder (sandbox only)."""
    settings = runtime.settings
    if settings.mode != "sandbox":
        raise errors.InvalidRequest("sandbox-provider is only available in sandbox mode")
    key_file = settings.data_dir / "sandbox-provider.json"
    try:
        record = json.loads(key_file.read_text("utf-8"))
        providers.authenticate(runtime, record["apiKey"])
        record["webhookSecret"]
    except (OSError, ValueError, KeyError, errors.Unauthenticated):
        try:
            provider, key = providers.create_provider(
                runtime, SANDBOX_PROVIDER, development=True, callback_urls=SANDBOX_CALLBACKS
            )
            provider_id = provider.provider_id
        except errors.ProviderNameTaken:
            key = providers.rotate_key(runtime, SANDBOX_PROVIDER, overlap_seconds=0)
            provider_id = providers.get_provider(runtime, SANDBOX_PROVIDER).provider_id
        providers.set_webhook_url(runtime, provider_id, SANDBOX_WEBHOOK)
        secret = ensure_webhook_secret(runtime, provider_id) or rotate_webhook_secret(
            runtime, provider_id, overlap_seconds=0
        )
        record = {
            "providerId": provider_id,
            "keyId": key.key_id,
            "apiKey": key.api_key,
            "webhookSecret": secret,
        }
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(json.dumps(record), "utf-8")
    print(f"sandbox provider {record['providerId']}", file=out)
    print(f"API key          {record['apiKey']}", file=out)
    # Read back, not the defaults: add-callback and set-webhook change them.
    current = providers.get_provider(runtime, record["providerId"])
    print(f"callback URLs    {', '.join(current.callback_urls)}", file=out)
    print(f"webhook URL      {current.webhook_url or '(none)'}", file=out)
    print(f"API docs         {settings.public_base_url}/ui/", file=out)
    return 0


def _set_webhook(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    if args.clear == bool(args.url):
        raise errors.InvalidRequest("give a webhook URL or --clear, not both or neither")
    provider = providers.get_provider(runtime, args.provider)
    providers.set_webhook_url(
        runtime, provider.provider_id, None if args.clear else args.url, args.include_tokens
    )
    if args.clear:
        print(f"webhooks off for {provider.name}", file=out)
        return 0
    print(f"webhooks for {provider.name} go to {args.url}", file=out)
    fresh = ensure_webhook_secret(runtime, provider.provider_id)
    if fresh:
        print(f"webhook secret {fresh}", file=out)
        print("Shown only now: verify each webhook's signature with it.", file=out)
    return 0


def _print_key(
    out: TextIO, as_json: bool, provider_id: str, name: str, key: providers.IssuedKey
) -> int:
    if as_json:
        document = {"providerId": provider_id, "name": name, "keyId": key.key_id}
        print(json.dumps({**document, "apiKey": key.api_key}), file=out)
    else:
        print(f"provider {name} ({provider_id})", file=out)
        print(f"key id   {key.key_id}", file=out)
        print(f"API key  {key.api_key}", file=out)
        print("The API key is shown only now: store it in your secret manager.", file=out)
    return 0


def _provider_summary(provider: providers.Provider, now: Any) -> dict[str, Any]:
    return {
        "providerId": provider.provider_id,
        "name": provider.name,
        "development": provider.development,
        "webhookUrl": provider.webhook_url,
        "shareRefreshToken": provider.share_refresh_token,
        "callbackUrls": list(provider.callback_urls),
        "branding": {
            "displayName": provider.branding.display_name,
            "portalUrl": provider.branding.portal_url,
            "logoUrl": provider.branding.logo_url,
        }
        if provider.branding
        else None,
        "keys": [
            {
                "keyId": key.key_id,
                "prefix": key.prefix,
                "active": key.is_active(now),
                "createdAt": key.created_at.isoformat(),
                "expiresAt": key.expires_at.isoformat() if key.expires_at else None,
                "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
            }
            for key in provider.keys
        ],
    }


def _serve(
    settings: Settings, args: argparse.Namespace, env: Mapping[str, str] | None, err: TextIO
) -> int:
    bind = args.bind or settings.bind
    workers = args.workers or settings.workers
    if not 1 <= workers <= 64:
        print("ctt-broker: --workers must be between 1 and 64", file=err)
        return EXIT_USAGE
    runtime = open_runtime(settings, with_microsoft=False)
    try:
        if settings.mode == "sandbox":
            upgrade_database(runtime.engine)
        elif pending_revisions(runtime.engine):
            print(_schema_not_current(settings), file=err)
            return EXIT_SCHEMA
    finally:
        runtime.engine.dispose()
    environment = dict(env if env is not None else os.environ)
    if settings.metrics_bind:
        # Every worker writes its metrics here; the master sums them (see broker.metrics).
        metrics_dir = environment.setdefault(MULTIPROC_ENV, str(settings.data_dir / "metrics"))
        reset_multiprocess_dir(metrics_dir)
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable)) or "gunicorn"
    command = [
        gunicorn,
        "--config",
        "python:handlers.gunicorn_hooks",
        "--worker-class",
        "handlers.worker.BrokerWorker",
        "--bind",
        bind,
        "--workers",
        str(workers),
        # SIGTERM: the master closes the listening sockets at once (new connections
        # are refused) and gives requests in flight this long to finish.
        "--graceful-timeout",
        str(settings.graceful_timeout_seconds),
        "handlers.app:app_from_environment()",
    ]
    print(
        f"ctt-broker: serving on http://{bind} ({settings.mode} mode, {workers} workers)", file=err
    )
    if settings.metrics_bind:
        print(f"ctt-broker: metrics on http://{settings.metrics_bind}/metrics", file=err)
    # Exec, not a child process: gunicorn becomes PID 1 in a container and gets the signals.
    os.execvpe(command[0], command, environment)  # noqa: S606
    return 0  # pragma: no cover - exec does not return


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
