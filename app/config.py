"""Configuration: defaults, then the environment (and `.env`), then a test mapping.

`SWITCHBOARD_ENV` is `production` unless set (`make run` sets `development`; the tests use
`testing`). In production the app fails fast, naming the variable, when SECRET_KEY or
ENCRYPTION_KEYS is missing or a value is malformed. In development both secrets are generated
once into the instance folder (mode 0600) so a fresh clone just runs; under testing a missing
SECRET_KEY becomes a random one for the process (never written anywhere).

`.env` is loaded by `wsgi.py` (and by the `flask` command) before this runs; variables already
in the environment win over the file.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENVIRONMENTS = ("production", "development", "testing")


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable, never a secret."""


def _env_bool(name: str, default: bool) -> bool:
    return _parse_bool(name, os.environ.get(name), default)


def _parse_bool(name: str, raw: Any, default: bool) -> bool:
    """A boolean setting: true/false, 1/0, yes/no, on/off. :raise ConfigError: anything else."""
    if isinstance(raw, bool):
        return raw
    if raw is None or str(raw).strip() == "":
        return default
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false.")


def _parse_days(name: str, raw: Any) -> int:
    """A number of days, 0 or more. :raise ConfigError: anything else."""
    try:
        value = int(str(raw).strip() or "0")
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name} must be a whole number of days, 0 or more (0 turns it off).")
    return value


def _parse_count(name: str, raw: Any) -> int:
    """A whole number, 0 or more. :raise ConfigError: anything else."""
    text = str(raw if raw is not None else "").strip() or "0"
    if text not in {str(n) for n in range(11)}:
        raise ConfigError(f"{name} must be a whole number from 0 to 10.")
    return int(text)


def _read_or_create(path: Path, make: Any) -> str:
    """Return the secret stored at `path`, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def load_config(instance_path: str, test_config: dict[str, Any] | None) -> dict[str, Any]:
    """Build the settings mapping for `create_app`.

    :raise ConfigError: a required secret is missing outside development, or a value is malformed.
    """
    test_config = dict(test_config or {})
    env_name = test_config.pop("SWITCHBOARD_ENV", None) or os.environ.get(
        "SWITCHBOARD_ENV", "testing" if test_config.get("TESTING") else "production"
    )
    if env_name not in ENVIRONMENTS:
        raise ConfigError(f"SWITCHBOARD_ENV must be one of {', '.join(ENVIRONMENTS)}.")
    development = env_name == "development"
    instance = Path(instance_path)

    def setting(name: str, default: Any = None) -> Any:
        if name in test_config:
            return test_config[name]
        return os.environ.get(name, default)

    secret_key = setting("SECRET_KEY")
    if not secret_key:
        if development:
            secret_key = _read_or_create(instance / "secret_key", lambda: secrets.token_urlsafe(48))
        elif env_name == "testing":
            secret_key = secrets.token_urlsafe(48)  # sessions of a test run need not outlive it
        else:
            raise ConfigError("SECRET_KEY is not set. Set SECRET_KEY to a long random value.")

    encryption_keys = setting("ENCRYPTION_KEYS")
    if not encryption_keys:
        if not development:
            raise ConfigError(
                "ENCRYPTION_KEYS is not set. Set ENCRYPTION_KEYS to one or more comma-separated "
                "base64-encoded 32-byte keys."
            )
        encryption_keys = _read_or_create(
            instance / "encryption_keys",
            lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
        )

    database_url = setting("DATABASE_URL") or f"sqlite:///{instance / 'switchboard.db'}"
    if database_url.startswith("postgresql://") or database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]

    secure_default = not development
    if "SESSION_COOKIE_SECURE" in test_config:
        cookie_secure = bool(test_config.pop("SESSION_COOKIE_SECURE"))
    else:
        cookie_secure = _env_bool("SESSION_COOKIE_SECURE", secure_default)

    allow_byok = _parse_bool("ALLOW_BYOK", setting("ALLOW_BYOK"), True)
    key_max_age_days = _parse_days("KEY_MAX_AGE_DAYS", setting("KEY_MAX_AGE_DAYS", 0))
    trusted_proxies = _parse_count("TRUSTED_PROXIES", setting("TRUSTED_PROXIES", 0))

    config: dict[str, Any] = {
        "SWITCHBOARD_ENV": env_name,
        "DEVELOPMENT": development,
        "SECRET_KEY": secret_key,
        "ENCRYPTION_KEYS": encryption_keys,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(database_url),
        "ALLOW_BYOK": bool(allow_byok),
        # Shared keys older than this many days show "Rotate soon" (0: off).
        "KEY_MAX_AGE_DAYS": key_max_age_days,
        "REDIS_URL": setting("REDIS_URL") or None,
        "PRIVATE_BASE_URL_ALLOWLIST": setting("PRIVATE_BASE_URL_ALLOWLIST", "") or "",
        # Reverse proxies in front whose X-Forwarded-For gives the client address (0: none).
        "TRUSTED_PROXIES": trusted_proxies,
        # Bearer token of GET /metrics (app/metrics.py); unset: the route answers 404.
        "METRICS_TOKEN": (setting("METRICS_TOKEN") or "").strip() or None,
        # Sessions: signed cookies; the __Host- prefix only when the cookie is Secure.
        "SESSION_COOKIE_SECURE": cookie_secure,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_NAME": "__Host-session" if cookie_secure else "session",
        "SESSION_COOKIE_PATH": "/",
        "REMEMBER_COOKIE_DURATION": 0,
        "PERMANENT_SESSION_LIFETIME": 60 * 60 * 12,
        "MAX_CONTENT_LENGTH": 64 * 1024,
        "WTF_CSRF_TIME_LIMIT": None,
        "WTF_CSRF_SSL_STRICT": True,
        # Rate limits: login failures per IP and per email; failed current-password checks of
        # a password change per user and per IP.
        "LOGIN_RATE_LIMIT": "5 per minute",
        "PASSWORD_CHECK_RATE_LIMIT": "5 per minute",
        "RATELIMIT_STORAGE_URI": setting("REDIS_URL") or "memory://",
        "RATELIMIT_KEY_PREFIX": "switchboard",
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_HEADERS_ENABLED": False,
        # Argon2id at (above) the OWASP minimum: m=19 MiB, t=2, p=1.
        "ARGON2_TIME_COST": 2,
        "ARGON2_MEMORY_COST": 19 * 1024,
        "ARGON2_PARALLELISM": 1,
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    }
    config.update(_outbound_settings(setting))
    config.update(_sso_settings(setting))
    # Anything else passed by tests (TESTING, overrides of the above) wins.
    for name in ("SECRET_KEY", "ENCRYPTION_KEYS", "DATABASE_URL", "ALLOW_BYOK", "REDIS_URL",
                 "PRIVATE_BASE_URL_ALLOWLIST", "KEY_MAX_AGE_DAYS", "TRUSTED_PROXIES", *SSO_VARIABLES):
        test_config.pop(name, None)
    if "SQLALCHEMY_ENGINE_OPTIONS" in test_config:
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **config["SQLALCHEMY_ENGINE_OPTIONS"],
            **test_config.pop("SQLALCHEMY_ENGINE_OPTIONS"),
        }
    config.update(test_config)
    return config


OUTBOUND_DEFAULTS = {
    "OUTBOUND_CONNECT_TIMEOUT": 5.0,
    "OUTBOUND_READ_TIMEOUT": 10.0,
    "OUTBOUND_DEADLINE": 15.0,
    "OUTBOUND_MAX_RESPONSE_BYTES": 1024 * 1024,
}


def _outbound_settings(setting: Any) -> dict[str, Any]:
    """Limits of calls to providers, checked at start-up rather than at the first call.

    :raise ConfigError: a limit is not a positive number, or the rate limit does not parse.
    """
    from limits import parse

    values: dict[str, Any] = {}
    for name, default in OUTBOUND_DEFAULTS.items():
        raw = setting(name, default)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = -1.0
        if not value > 0:
            raise ConfigError(f"{name} must be a positive number.")
        values[name] = int(value) if name == "OUTBOUND_MAX_RESPONSE_BYTES" else value
    rate = setting("OUTBOUND_RATE_LIMIT", "10 per minute")
    try:
        parse(rate)
    except ValueError:
        raise ConfigError("OUTBOUND_RATE_LIMIT must be a rate such as '10 per minute'.") from None
    values["OUTBOUND_RATE_LIMIT"] = rate
    return values


SSO_REQUIRED = ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET")
SSO_OPTIONAL = ("OIDC_SCOPES", "OIDC_GROUPS_CLAIM", "OIDC_ADMIN_GROUP", "OIDC_ALLOWED_EMAIL_DOMAINS",
                "OIDC_REDIRECT_URI")
SSO_VARIABLES = (*SSO_REQUIRED, *SSO_OPTIONAL, "PASSWORD_LOGIN")
DEFAULT_SCOPES = "openid email profile"
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")


def _sso_settings(setting: Any) -> dict[str, Any]:
    """Single sign-on (OpenID Connect, SPEC section 10) and the password switch.

    SSO is on when OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET are all set. Nothing is
    fetched here: the provider's discovery document is read at the first SSO sign-in.

    :raise ConfigError: the three are only partly set; another OIDC_ setting is set while SSO is
        off; OIDC_ADMIN_GROUP without OIDC_GROUPS_CLAIM; PASSWORD_LOGIN=false without SSO (nobody
        could sign in); an issuer that is not an https URL (http only on loopback); scopes without
        `openid`; an allowed email domain that is not a domain name. Messages name the variable,
        never the client secret.
    """
    def text(name: str) -> str:
        value = setting(name)
        return "" if value is None else str(value).strip()

    required = {name: text(name) for name in SSO_REQUIRED}
    missing = [name for name, value in required.items() if not value]
    if 0 < len(missing) < len(required):
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"{' and '.join(missing)} {verb} not set: single sign-on needs OIDC_ISSUER, "
                          "OIDC_CLIENT_ID and OIDC_CLIENT_SECRET together.")
    enabled = not missing
    if not enabled:
        for name in SSO_OPTIONAL:
            if text(name):
                raise ConfigError(f"{name} is set but single sign-on is off: set OIDC_ISSUER, OIDC_CLIENT_ID "
                                  "and OIDC_CLIENT_SECRET too.")
    password_login = _parse_bool("PASSWORD_LOGIN", setting("PASSWORD_LOGIN"), True)
    if not password_login and not enabled:
        raise ConfigError("PASSWORD_LOGIN is false but single sign-on is off, so nobody could sign in: set "
                          "OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET, or PASSWORD_LOGIN=true.")
    values: dict[str, Any] = {
        "SSO_ENABLED": enabled,
        "PASSWORD_LOGIN": password_login,
        "OIDC_ISSUER": required["OIDC_ISSUER"] or None,
        "OIDC_CLIENT_ID": required["OIDC_CLIENT_ID"] or None,
        "OIDC_CLIENT_SECRET": required["OIDC_CLIENT_SECRET"] or None,
        "OIDC_SCOPES": DEFAULT_SCOPES,
        "OIDC_GROUPS_CLAIM": None,
        "OIDC_ADMIN_GROUP": None,
        "OIDC_ALLOWED_EMAIL_DOMAINS": (),
        "OIDC_REDIRECT_URI": None,
    }
    if not enabled:
        return values
    _check_issuer(required["OIDC_ISSUER"])
    scopes = (text("OIDC_SCOPES") or DEFAULT_SCOPES).split()
    if "openid" not in scopes:
        raise ConfigError("OIDC_SCOPES must include openid.")
    groups_claim, admin_group = text("OIDC_GROUPS_CLAIM"), text("OIDC_ADMIN_GROUP")
    if admin_group and not groups_claim:
        raise ConfigError("OIDC_ADMIN_GROUP is set but OIDC_GROUPS_CLAIM is not: set the claim that lists the "
                          "user's groups.")
    domains = []
    for entry in text("OIDC_ALLOWED_EMAIL_DOMAINS").split(","):
        domain = entry.strip().lower().removeprefix("@")
        if not domain:
            continue
        if not _DOMAIN_RE.match(domain):
            raise ConfigError(f"OIDC_ALLOWED_EMAIL_DOMAINS: {domain[:80]!r} is not a domain name.")
        domains.append(domain)
    redirect_uri = text("OIDC_REDIRECT_URI")
    if redirect_uri:
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("https", "http") or not parts.hostname or not parts.path.endswith("/auth/oidc/callback"):
            raise ConfigError("OIDC_REDIRECT_URI must be the app's absolute URL of /auth/oidc/callback, as "
                              "registered at the identity provider.")
    values.update({
        "OIDC_SCOPES": " ".join(scopes),
        "OIDC_GROUPS_CLAIM": groups_claim or None,
        "OIDC_ADMIN_GROUP": admin_group or None,
        "OIDC_ALLOWED_EMAIL_DOMAINS": tuple(domains),
        "OIDC_REDIRECT_URI": redirect_uri or None,
    })
    return values


def _check_issuer(issuer: str) -> None:
    """An absolute https URL without query, fragment or user info; plain http only on loopback
    (a provider on this machine, as in tests): tokens must not cross a network in clear.

    :raise ConfigError: naming OIDC_ISSUER.
    """
    problem = ConfigError("OIDC_ISSUER must be the identity provider's https URL (plain http only on loopback), "
                          "without a query, fragment or user name.")
    try:
        parts = urlsplit(issuer)
        host = parts.hostname
    except ValueError:
        raise problem from None
    if not host or parts.query or parts.fragment or "?" in issuer or "#" in issuer or parts.username:
        raise problem
    if parts.scheme == "https":
        return
    if parts.scheme != "http":
        raise problem
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise problem


def engine_options(database_url: str) -> dict[str, Any]:
    """Engine settings per backend: bounded waits everywhere, liveness checks on PostgreSQL."""
    if database_url.startswith("sqlite"):
        # The busy timeout is set per connection (see app/db.py).
        return {"connect_args": {"timeout": 15}}
    return {
        "pool_pre_ping": True,
        "pool_size": int(os.environ.get("DB_POOL_SIZE", "10")),
        "max_overflow": int(os.environ.get("DB_MAX_OVERFLOW", "10")),
        "pool_timeout": 10,
        "connect_args": {
            "connect_timeout": 5,
            "options": "-c statement_timeout=15000 -c lock_timeout=10000 "
            "-c idle_in_transaction_session_timeout=60000",
        },
    }
