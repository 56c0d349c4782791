"""Settings: one frozen object, built once from an environment mapping.

Every variable starts with ``CTT_``. ``load_settings`` checks them all and
reports every problem in one :class:`SettingsError`, so an operator fixes a
bad deployment in one pass. Secrets never appear in ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from limits import parse as parse_rate

PREFIX = "CTT_"
MODES = ("sandbox", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

T = TypeVar("T")


class SettingsError(ValueError):
    """Raised at start-up with every invalid or missing setting at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one broker instance."""

    mode: str
    public_base_url: str
    database_url: str = field(repr=False)
    data_dir: Path
    bind: str
    workers: int
    max_body_bytes: int
    key_rotation_overlap_seconds: int
    log_level: str
    login_host: str = "https://login.microsoftonline.com"
    database_pool_size: int = 10
    login_browser_url: str = "https://login.microsoftonline.com"
    login_transport_url: str | None = None
    graph_host: str = "https://graph.microsoft.com"
    app_credentials: str = field(default="", repr=False)
    state_keys: str = field(default="", repr=False)
    result_signing_key_file: str = ""
    microsoft_timeout_seconds: float = 10.0
    consent_confirm_attempts: int = 4
    consent_confirm_interval_seconds: float = 1.0
    flow_ttl_seconds: int = 600
    result_code_ttl_seconds: int = 300
    # Webhooks, events and retention (issue 8 items 3-4, issue 9 item 5).
    event_keys: str = field(default="", repr=False)
    webhook_attempt_seconds: float = 10.0
    outcome_write_patience_seconds: float = 20.0
    webhook_concurrency: int = 8
    retention_events_days: int = 30
    retention_audit_days: int = 365
    retention_attempts_days: int = 30
    retention_flows_days: int = 7
    # Abuse limits (issue 8): slow clients, concurrency, rate limits, proxies, docs.
    head_timeout_seconds: float = 10.0
    keep_alive_seconds: float = 5.0
    max_connections: int = 1000
    max_concurrent_requests: int = 64
    microsoft_concurrency: int = 8
    rate_limit_storage: str = field(default="memory://", repr=False)
    rate_limit_key_prefix: str = "ctt-broker"
    rate_limit_admin: str = "60/minute"
    rate_limit_link: str = "10/minute"
    rate_limit_auth_failures: str = "30/minute"
    rate_limit_api: str = "1200/minute"
    trusted_proxies: str = ""
    swagger_ui: bool = True
    validate_responses: bool = True
    teams_app_package_max_bytes: int = 1024 * 1024
    graph_retry_budget_seconds: float = 30.0
    # Operations (issue 11): shutdown and metrics.
    graceful_timeout_seconds: int = 30
    metrics_bind: str = ""
    # Production configuration (issue 11): extra trust anchors for calls to Microsoft.
    ca_bundle: str = ""

    @property
    def redirect_uri(self) -> str:
        """The one redirect URI registered at Microsoft for every app."""
        return f"{self.public_base_url}/oauth/callback"

    @property
    def database_url_redacted(self) -> str:
        """The database URL with any password replaced, safe to print."""
        return redact_url(self.database_url)

    def __repr__(self) -> str:
        return (
            f"Settings(mode={self.mode!r}, public_base_url={self.public_base_url!r}, "
            f"database_url={self.database_url_redacted!r}, data_dir={str(self.data_dir)!r}, "
            f"bind={self.bind!r}, workers={self.workers}, max_body_bytes={self.max_body_bytes}, "
            f"key_rotation_overlap_seconds={self.key_rotation_overlap_seconds}, "
            f"log_level={self.log_level!r}, login_host={self.login_host!r}, "
            f"login_browser_url={self.login_browser_url!r}, "
            f"login_transport_url={self.login_transport_url!r}, graph_host={self.graph_host!r}, "
            "app_credentials='***', state_keys='***', event_keys='***', "
            f"result_signing_key_file={self.result_signing_key_file!r}, "
            f"rate_limit_storage={redact_url(self.rate_limit_storage)!r})"
        )


# name (without prefix), default, meaning: the README's table is checked against this.
DOCUMENTED: dict[str, tuple[str, str]] = {
    "MODE": ("sandbox", "`sandbox` (no Microsoft tenant needed) or `production`."),
    "PUBLIC_BASE_URL": (
        "http://127.0.0.1:8080",
        "Base URL admins reach the broker on; action item URLs start with it. "
        "Must be https in production.",
    ),
    "DATA_DIR": (
        "(see rule)",
        "Folder for the default SQLite database, the sandbox provider's key and generated keys. "
        "Unset: the checkout's `var/` when ctt-broker runs from a source checkout (`make run`, "
        "`.venv/bin/ctt-broker` from any folder), else `$XDG_DATA_HOME/ctt-broker` "
        "(`~/.local/share/ctt-broker`). Never the current directory.",
    ),
    "DATABASE_URL": (
        "sqlite:///{DATA_DIR}/ctt-broker.sqlite3",
        "SQLAlchemy URL. `postgresql+psycopg://...` for production and several instances.",
    ),
    "DATABASE_POOL_SIZE": (
        "10",
        "Database connections each worker keeps open (1-200); a request finding none free "
        "waits for one. Keep workers, times instances, times this under the server's "
        "`max_connections`.",
    ),
    "BIND": ("127.0.0.1:8080", "Address `ctt-broker serve` listens on."),
    "WORKERS": ("2", "Gunicorn worker processes for `ctt-broker serve` (1-64)."),
    "MAX_BODY_BYTES": ("65536", "Largest accepted request body; larger gets 413."),
    "KEY_ROTATION_OVERLAP_SECONDS": (
        "86400",
        "Default time an API key stays valid after `provider rotate-key` (0-2592000).",
    ),
    "LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING or ERROR."),
    "LOGIN_HOST": (
        "(by mode)",
        "Microsoft identity platform host (MSAL authority and token issuer). Production: "
        "`https://login.microsoftonline.com` (national clouds use their own); sandbox: "
        "`https://login.emulator.test`, the emulator.",
    ),
    "CLOUD": (
        "public",
        "`public`, `usgov` (GCC High, L4), `usgov-dod` (L5) or `china` (21Vianet): sets the "
        "login and Graph hosts; `CTT_LOGIN_HOST` and `CTT_GRAPH_HOST` override it. App "
        "registrations must be made in that cloud.",
    ),
    "LOGIN_BROWSER_URL": (
        "(by mode)",
        "Where the admin's browser reaches the login host. Production: LOGIN_HOST; sandbox: "
        "`http://127.0.0.1:8400`, the emulator's pages.",
    ),
    "LOGIN_TRANSPORT_URL": (
        "(by mode)",
        "Sandbox only: the broker's HTTPS calls to LOGIN_HOST go to this http URL instead "
        "(default `http://127.0.0.1:8400`, the emulator). Refused in production.",
    ),
    "GRAPH_HOST": (
        "(by cloud)",
        "Microsoft Graph host (the `/.default` scope; the Teams app catalog calls). In the "
        "sandbox, calls to it go to LOGIN_TRANSPORT_URL like the login host's.",
    ),
    "TEAMS_APP_PACKAGE_MAX_BYTES": (
        "1048576",
        "Largest Teams app package (zip) a provider may upload (4096-10485760); larger gets 413.",
    ),
    "GRAPH_RETRY_BUDGET_SECONDS": (
        "30",
        "Longest total wait honouring Graph's 429 `Retry-After` during one deployment (0-120).",
    ),
    "APP_CREDENTIALS": (
        "(sandbox credentials)",
        "JSON `{app: {clientId, clientSecret, homeTenantId}}` for every `app` of the action "
        "catalog (`homeTenantId`, optional, is what `microsoft check` uses); a certificate "
        "instead of the secret: `certificateKeyFile` (PEM key) with `certificateFile` (PEM) "
        "or `certificateThumbprint`. Or `@/path/file.json`. Required in production.",
    ),
    "STATE_KEYS": (
        "(generated in DATA_DIR)",
        "State signing keys `kid:base64url-secret,...` (first signs, all verify), or "
        "`@/path/file` holding them. Required in production.",
    ),
    "RESULT_SIGNING_KEY_FILE": (
        "(generated in DATA_DIR)",
        "PEM EC P-256 private key signing form_post result JWTs (published at "
        "`/.well-known/jwks.json`). Required in production.",
    ),
    "MICROSOFT_TIMEOUT_SECONDS": ("10", "Timeout of each call to Microsoft (1-60)."),
    "CONSENT_CONFIRM_ATTEMPTS": (
        "4",
        "Tries to see a fresh consent's service principal before reporting `pending` (1-10).",
    ),
    "CONSENT_CONFIRM_INTERVAL_SECONDS": ("1", "Pause between those tries (0-10)."),
    "FLOW_TTL_SECONDS": ("600", "How long the admin may take at Microsoft (60-3600)."),
    "RESULT_CODE_TTL_SECONDS": ("300", "How long a `resultCode` can be redeemed (30-3600)."),
    "EVENT_KEYS": (
        "(generated in DATA_DIR)",
        "Keys sealing tokens in events until delivery (AES-256-GCM), `kid:base64url-secret,...` "
        "(first seals, all open; 32+ bytes each), or `@/path/file` holding them. Required in "
        "production.",
    ),
    "OUTCOME_WRITE_PATIENCE_SECONDS": (
        "20",
        "How long a callback keeps retrying to store its outcome while the database is "
        "unreachable, before the admin is asked to reload (0-50).",
    ),
    "WEBHOOK_ATTEMPT_SECONDS": (
        "10",
        "Wall-clock deadline of one webhook attempt, connect to answer (1-60).",
    ),
    "WEBHOOK_CONCURRENCY": (
        "8",
        "Providers the worker delivers to at once, one attempt in flight each (1-64).",
    ),
    "RETENTION_EVENTS_DAYS": (
        "30",
        "Days events (and their deliveries) are kept for the events API (1-3650).",
    ),
    "RETENTION_AUDIT_DAYS": ("365", "Days audit trail lines are kept (1-3650)."),
    "RETENTION_ATTEMPTS_DAYS": ("30", "Days webhook delivery attempts are kept (1-3650)."),
    "RETENTION_FLOWS_DAYS": ("7", "Days sign-in flow rows are kept, used or not (1-3650)."),
    # Abuse limits.
    "HEAD_TIMEOUT_SECONDS": (
        "10",
        "A connection must deliver a complete request within this time, or it is closed (1-120).",
    ),
    "KEEP_ALIVE_SECONDS": ("5", "An idle keep-alive connection is closed after this time (1-120)."),
    "MAX_CONNECTIONS": (
        "1000",
        "Open connections per worker process; beyond it new requests get 503 (10-100000).",
    ),
    "MAX_CONCURRENT_REQUESTS": (
        "64",
        "Requests in progress per worker process; beyond it 503 with `Retry-After` (1-10000).",
    ),
    "MICROSOFT_CONCURRENCY": (
        "8",
        "Admin requests that may wait on Microsoft at once per worker process, on threads of "
        "their own so the provider API never waits behind them (1-256).",
    ),
    "RATE_LIMIT_STORAGE": (
        "memory://",
        "Where rate-limit counters live: `memory://` (one instance) or `redis://host:port/db` "
        "(shared by several instances).",
    ),
    "RATE_LIMIT_KEY_PREFIX": ("ctt-broker", "Prefix of the rate-limit keys in Redis."),
    "RATE_LIMIT_ADMIN": (
        "60/minute",
        "Admin page requests per client IP (`N/second|minute|hour`).",
    ),
    "RATE_LIMIT_LINK": ("10/minute", "Clicks per action item link."),
    "RATE_LIMIT_AUTH_FAILURES": ("30/minute", "Failed API authentications per client IP."),
    "RATE_LIMIT_API": ("1200/minute", "Provider API requests per API key."),
    "TRUSTED_PROXIES": (
        "(none)",
        "Comma-separated CIDRs of reverse proxies whose `X-Forwarded-For` names the client IP.",
    ),
    "SWAGGER_UI": (
        "(by mode)",
        "`1` serves Swagger UI at `/ui/`: on in sandbox, off in production.",
    ),
    "VALIDATE_RESPONSES": (
        "(by mode)",
        "`1` checks every API answer against `openapi.yaml` (a stray answer becomes a logged "
        "500): on in sandbox, the tests and the contract suite, off in production, where it "
        "would cost about a fifth of an API request's CPU.",
    ),
    # Operations.
    "GRACEFUL_TIMEOUT_SECONDS": (
        "30",
        "On SIGTERM, requests in flight get this long to finish before workers are stopped "
        "(5-600); keep the orchestrator's grace period longer.",
    ),
    "CA_BUNDLE": (
        "(none)",
        "PEM file of extra CA certificates trusted for calls to Microsoft, besides the "
        "public ones (private PKI, a TLS-inspecting proxy). Proxy variables and "
        "`REQUESTS_CA_BUNDLE` are ignored.",
    ),
    "METRICS_BIND": (
        "(none)",
        "`HOST:PORT` where `ctt-broker serve` serves Prometheus metrics at `/metrics`, apart "
        "from the public API (off when unset); keep it on a private network.",
    ),
}

_UNSET = (
    "(by cloud)",
    "(by mode)",
    "(sandbox credentials)",
    "(generated in DATA_DIR)",
    "(none)",
    "(see rule)",
)
MICROSOFT_LOGIN_HOST = "https://login.microsoftonline.com"
EMULATOR_LOGIN_HOST = "https://login.emulator.test"
EMULATOR_URL = "http://127.0.0.1:8400"
MICROSOFT_GRAPH_HOST = "https://graph.microsoft.com"
# Login (Entra ID) and Graph hosts per cloud, from learn.microsoft.com/graph/deployments
# ("App registration and token service root endpoints", "Microsoft Graph ... service root
# endpoints"). US Government L4 (GCC High) and L5 (DoD) share the login host.
CLOUDS = {
    "public": ("https://login.microsoftonline.com", "https://graph.microsoft.com"),
    "usgov": ("https://login.microsoftonline.us", "https://graph.microsoft.us"),
    "usgov-dod": ("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    "china": ("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
}


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where data lives when ``CTT_DATA_DIR`` is unset; never depends on the current directory.

    Run from a source checkout (an editable install, as ``make setup`` makes), the
    checkout's ``var/``: ``make run`` and ``.venv/bin/ctt-broker`` started from any
    folder then share one database. Installed as a package: the XDG data folder.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "openapi.yaml").is_file():
        return checkout / "var"
    xdg = env.get("XDG_DATA_HOME") or ""
    base = (
        Path(xdg) if xdg.startswith("/") else Path(env.get("HOME") or Path.home()) / ".local/share"
    )
    return (base / "ctt-broker").resolve()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (``os.environ`` when None).

    Raises :class:`SettingsError` listing every problem found.
    """
    source = os.environ if env is None else env
    problems: list[str] = []

    def raw(name: str) -> str:
        value = source.get(PREFIX + name)
        if value is None or value == "":
            default = DOCUMENTED[name][0]
            return "" if default in _UNSET else default
        return value

    def parse(name: str, convert: Callable[[str], T], fallback: T, default: str = "") -> T:
        given = raw(name) or default
        if not given:
            return fallback
        try:
            return convert(given)
        except ValueError as exc:
            problems.append(f"{PREFIX}{name}: {exc}")
            return fallback

    unknown = sorted(
        key for key in source if key.startswith(PREFIX) and key[len(PREFIX) :] not in DOCUMENTED
    )
    problems.extend(f"{key}: unknown setting (typo?)" for key in unknown)

    mode = parse("MODE", _choice(MODES), "sandbox")
    public_base_url = parse("PUBLIC_BASE_URL", _base_url, "http://127.0.0.1:8080")
    if mode == "production" and not _is_https(public_base_url):
        problems.append(f"{PREFIX}PUBLIC_BASE_URL: must be https in production mode")
    data_dir = (
        Path(raw("DATA_DIR")).expanduser().resolve()
        if raw("DATA_DIR")
        else default_data_dir(source)
    )
    database_url = parse("DATABASE_URL", _database_url, "")
    database_url = database_url.replace("{DATA_DIR}", str(data_dir))
    database_pool_size = parse("DATABASE_POOL_SIZE", _int_between(1, 200), 10)
    bind = parse("BIND", _bind, "127.0.0.1:8080")
    workers = parse("WORKERS", _int_between(1, 64), 2)
    max_body_bytes = parse("MAX_BODY_BYTES", _int_between(1024, 10 * 1024 * 1024), 65536)
    overlap = parse("KEY_ROTATION_OVERLAP_SECONDS", _int_between(0, 30 * 86400), 86400)
    log_level = parse("LOG_LEVEL", _choice(LOG_LEVELS), "INFO")
    # The sandbox never talks to Microsoft: its defaults point at the emulator.
    sandbox = mode == "sandbox"
    cloud = parse("CLOUD", _choice(tuple(CLOUDS)), "public")
    cloud_login, cloud_graph = CLOUDS[cloud]
    # A cloud named in the sandbox is played by the emulator under that cloud's host names.
    sandbox_login = cloud_login if source.get(PREFIX + "CLOUD") else EMULATOR_LOGIN_HOST
    login_host = parse(
        "LOGIN_HOST",
        _https_base_url,
        MICROSOFT_LOGIN_HOST,
        sandbox_login if sandbox else cloud_login,
    )
    login_browser_url = parse(
        "LOGIN_BROWSER_URL", _base_url, login_host, EMULATOR_URL if sandbox else login_host
    )
    if mode == "production" and not _is_https(login_browser_url):
        problems.append(f"{PREFIX}LOGIN_BROWSER_URL: must be https in production mode")
    transport = source.get(PREFIX + "LOGIN_TRANSPORT_URL") or (EMULATOR_URL if sandbox else "")
    login_transport_url = parse("LOGIN_TRANSPORT_URL", _base_url, None, transport) or None
    if login_transport_url and not sandbox:
        problems.append(f"{PREFIX}LOGIN_TRANSPORT_URL: only allowed in sandbox mode")
    graph_host = parse("GRAPH_HOST", _https_base_url, MICROSOFT_GRAPH_HOST, cloud_graph)
    package_max = parse(
        "TEAMS_APP_PACKAGE_MAX_BYTES", _int_between(4096, 10 * 1024 * 1024), 1048576
    )
    retry_budget = parse("GRAPH_RETRY_BUDGET_SECONDS", _float_between(0, 120), 30.0)
    secrets_given = {
        name: raw(name)
        for name in ("APP_CREDENTIALS", "STATE_KEYS", "RESULT_SIGNING_KEY_FILE", "EVENT_KEYS")
    }
    for name in ("STATE_KEYS", "EVENT_KEYS"):
        # `@/run/secrets/file`: the keys come from a file (a mounted secret), not the environment.
        if secrets_given[name].startswith("@"):
            try:
                secrets_given[name] = Path(secrets_given[name][1:]).read_text("utf-8").strip()
            except OSError as exc:
                problems.append(f"{PREFIX}{name}: cannot read {exc.filename}")
                secrets_given[name] = ""
    if mode == "production":
        problems.extend(
            f"{PREFIX}{name}: required in production mode"
            for name, value in secrets_given.items()
            if not value
        )
    timeout = parse("MICROSOFT_TIMEOUT_SECONDS", _float_between(1, 60), 10.0)
    attempts = parse("CONSENT_CONFIRM_ATTEMPTS", _int_between(1, 10), 4)
    interval = parse("CONSENT_CONFIRM_INTERVAL_SECONDS", _float_between(0, 10), 1.0)
    flow_ttl = parse("FLOW_TTL_SECONDS", _int_between(60, 3600), 600)
    result_ttl = parse("RESULT_CODE_TTL_SECONDS", _int_between(30, 3600), 300)
    attempt_seconds = parse("WEBHOOK_ATTEMPT_SECONDS", _float_between(1, 60), 10.0)
    # Below the flow claim's lease (60 s), so a patient writer never outlives its claim.
    patience = parse("OUTCOME_WRITE_PATIENCE_SECONDS", _float_between(0, 50), 20.0)
    concurrency = parse("WEBHOOK_CONCURRENCY", _int_between(1, 64), 8)
    retention = {
        name: parse(f"RETENTION_{name.upper()}_DAYS", _int_between(1, 3650), fallback)
        for name, fallback in (("events", 30), ("audit", 365), ("attempts", 30), ("flows", 7))
    }
    head_timeout = parse("HEAD_TIMEOUT_SECONDS", _float_between(1, 120), 10.0)
    keep_alive = parse("KEEP_ALIVE_SECONDS", _float_between(1, 120), 5.0)
    max_connections = parse("MAX_CONNECTIONS", _int_between(10, 100000), 1000)
    max_requests = parse("MAX_CONCURRENT_REQUESTS", _int_between(1, 10000), 64)
    microsoft_concurrency = parse("MICROSOFT_CONCURRENCY", _int_between(1, 256), 8)
    rate_storage = parse("RATE_LIMIT_STORAGE", _rate_limit_storage, "memory://")
    rate_limits = {
        name: parse(name, _rate, DOCUMENTED[name][0])
        for name in (
            "RATE_LIMIT_ADMIN",
            "RATE_LIMIT_LINK",
            "RATE_LIMIT_AUTH_FAILURES",
            "RATE_LIMIT_API",
        )
    }
    trusted_proxies = parse("TRUSTED_PROXIES", _networks, "")
    swagger_ui = parse("SWAGGER_UI", _flag, sandbox)
    validate_responses = parse("VALIDATE_RESPONSES", _flag, sandbox)
    graceful_timeout = parse("GRACEFUL_TIMEOUT_SECONDS", _int_between(5, 600), 30)
    metrics_bind = parse("METRICS_BIND", _bind, "")
    ca_bundle = parse("CA_BUNDLE", _readable_file, "")
    if metrics_bind and metrics_bind == bind:
        problems.append(
            f"{PREFIX}METRICS_BIND: must differ from {PREFIX}BIND (never the public API)"
        )

    if problems:
        raise SettingsError(problems)
    return Settings(
        mode=mode,
        public_base_url=public_base_url,
        database_url=database_url,
        database_pool_size=database_pool_size,
        data_dir=data_dir,
        bind=bind,
        workers=workers,
        max_body_bytes=max_body_bytes,
        key_rotation_overlap_seconds=overlap,
        log_level=log_level,
        login_host=login_host,
        login_browser_url=login_browser_url,
        login_transport_url=login_transport_url,
        graph_host=graph_host,
        app_credentials=secrets_given["APP_CREDENTIALS"],
        state_keys=secrets_given["STATE_KEYS"],
        result_signing_key_file=secrets_given["RESULT_SIGNING_KEY_FILE"],
        microsoft_timeout_seconds=timeout,
        consent_confirm_attempts=attempts,
        consent_confirm_interval_seconds=interval,
        flow_ttl_seconds=flow_ttl,
        result_code_ttl_seconds=result_ttl,
        event_keys=secrets_given["EVENT_KEYS"],
        webhook_attempt_seconds=attempt_seconds,
        outcome_write_patience_seconds=patience,
        webhook_concurrency=concurrency,
        retention_events_days=retention["events"],
        retention_audit_days=retention["audit"],
        retention_attempts_days=retention["attempts"],
        retention_flows_days=retention["flows"],
        head_timeout_seconds=head_timeout,
        keep_alive_seconds=keep_alive,
        max_connections=max_connections,
        max_concurrent_requests=max_requests,
        microsoft_concurrency=microsoft_concurrency,
        rate_limit_storage=rate_storage,
        rate_limit_key_prefix=raw("RATE_LIMIT_KEY_PREFIX"),
        rate_limit_admin=rate_limits["RATE_LIMIT_ADMIN"],
        rate_limit_link=rate_limits["RATE_LIMIT_LINK"],
        rate_limit_auth_failures=rate_limits["RATE_LIMIT_AUTH_FAILURES"],
        rate_limit_api=rate_limits["RATE_LIMIT_API"],
        trusted_proxies=trusted_proxies,
        swagger_ui=swagger_ui,
        validate_responses=validate_responses,
        teams_app_package_max_bytes=package_max,
        graph_retry_budget_seconds=retry_budget,
        graceful_timeout_seconds=graceful_timeout,
        metrics_bind=metrics_bind,
        ca_bundle=ca_bundle,
    )


def redact_url(url: str) -> str:
    """Replace the password of a URL with ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value

    return convert


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def convert(value: str) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if not low <= number <= high:
            raise ValueError(f"{number} is not between {low} and {high}")
        return number

    return convert


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def convert(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not low <= number <= high:
            raise ValueError(f"{number} is not between {low} and {high}")
        return number

    return convert


def _is_https(url: str) -> bool:
    return urlsplit(url).scheme.lower() == "https"


def _https_base_url(value: str) -> str:
    url = _base_url(value)
    if not _is_https(url):
        raise ValueError(f"{value!r} must be https (MSAL accepts only https authorities)")
    return url


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{value!r} must not carry a query, fragment or credentials")
    # Schemes and hosts are case-insensitive: store them lower-case so every check agrees.
    netloc = parts.netloc.lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, "", "")).rstrip("/")


def _database_url(value: str) -> str:
    if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        raise ValueError("only sqlite:// and postgresql+psycopg:// URLs are supported")
    if value.startswith("postgresql://"):
        # psycopg 3 is the driver we install; SQLAlchemy's default would be psycopg2.
        value = "postgresql+psycopg://" + value[len("postgresql://") :]
    return value


def _rate(value: str) -> str:
    try:
        parse_rate(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate like 60/minute") from None
    return value


def _rate_limit_storage(value: str) -> str:
    if value != "memory://" and not value.startswith(("redis://", "rediss://")):
        raise ValueError("only memory:// and redis:// (or rediss://) are supported")
    return value


def _networks(value: str) -> str:
    for part in value.split(","):
        if part.strip():
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not an IP network (CIDR)") from None
    return value


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError(f"{value!r} is not 0 or 1")
    return value == "1"


def _readable_file(value: str) -> str:
    if not Path(value).is_file():
        raise ValueError(f"{value!r} is not a readable file")
    return value


def _bind(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value
