"""The reader: the same rules as the Rust ``secrets-reader`` crate, pinned by
the conformance cases in ``readers/conformance/``."""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Final, NoReturn

from ._sigv4 import amz_date, sign

#: Searched first when ``$SECRETS_DIR`` is unset or empty.
DEFAULT_DIR: Final = "/run/secrets"
#: Secret files larger than this (1 MiB) are refused.
MAX_SECRET_LEN: Final = 1 << 20
#: Default of ``$SECRETS_CACHE_SECONDS``.
DEFAULT_CACHE_SECONDS: Final = 60
_MAX_BODY: Final = 8 * MAX_SECRET_LEN
_TIMEOUT: Final = 10.0
_PORT_REASON: Final = "is not a port number (1-65535)"
_NO_CREDENTIALS: Final = (
    "no credentials: set $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY "
    "(and $AWS_SESSION_TOKEN) or $AWS_SHARED_CREDENTIALS_FILE"
)
_PROVIDERS: Final = ("files", "env", "vault", "aws")
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class SecretKey(StrEnum):
    """The secrets of the R3MES stack (its guide's "Secrets Reference"), plus the two URLs."""

    POSTGRES_PASSWORD = "postgres_password"
    POSTGRES_USER = "postgres_user"
    REDIS_PASSWORD = "redis_password"
    JWT_SECRET = "jwt_secret"
    API_SECRET_KEY = "api_secret_key"
    GRAFANA_ADMIN_PASSWORD = "grafana_admin_password"
    VALIDATOR_KEY = "validator_key"
    NODE_KEY = "node_key"
    SSL_CERTIFICATE = "ssl_certificate"
    SSL_PRIVATE_KEY = "ssl_private_key"
    DATABASE_URL = "database_url"
    REDIS_URL = "redis_url"


class SecretError(Exception):
    """Why a secret could not be read. Never contains a secret value.

    ``kind`` is one of ``invalid_name``, ``conflict``, ``not_found``,
    ``cannot_build``, ``empty``, ``not_utf8``, ``io``, ``invalid_var``,
    ``provider``.
    """

    def __init__(
        self, kind: str, message: str, looked: list[str] | None = None, missing: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.looked: list[str] = list(looked or [])
        self.missing: list[str] = list(missing or [])

    def __repr__(self) -> str:
        return f"SecretError(kind={self.kind!r}, message={self.message!r})"


def _quote(s: str) -> str:
    """Rust's ``{:?}`` of a string, so messages match the other readers."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif c == 0:
            out.append("\\0")
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\u{{{c:x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class Secret:
    """A secret value. ``str``, ``repr``, ``format`` (so logging and f-strings)
    never show it; ``expose()`` and ``expose_str()`` do. It cannot be pickled."""

    __slots__ = ("_bytes", "source")

    def __init__(self, value: bytes | bytearray, source: str) -> None:
        self._bytes = bytearray(value)
        #: Where the value came from, e.g. ``/run/secrets/jwt_secret`` or ``$JWT_SECRET``.
        self.source = source

    def expose(self) -> bytes:
        """The bytes. Anything built from them is the caller's to protect."""
        return bytes(self._bytes)

    def expose_str(self) -> str:
        """The value as UTF-8 text; a ``not_utf8`` :class:`SecretError` when it is not."""
        try:
            return self._bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError("not_utf8", f"secret from {self.source} is not valid UTF-8") from None

    def fingerprint(self) -> str:
        """First 12 hex characters of the SHA-256 of the bytes (unkeyed: not for guessable values)."""
        return hashlib.sha256(self._bytes).hexdigest()[:12]

    def wipe(self) -> None:
        """Overwrites this object's copy of the bytes with zeros."""
        for i in range(len(self._bytes)):
            self._bytes[i] = 0

    def __len__(self) -> int:
        return len(self._bytes)

    def __str__(self) -> str:
        return "<redacted>"

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r}, value=<redacted>)"

    def __format__(self, spec: str) -> str:
        return "<redacted>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def env_var_name(name: str) -> str:
    """``postgres_password`` -> ``POSTGRES_PASSWORD``; ``-`` and ``.`` become ``_`` (ASCII upper-casing only)."""
    return "".join("_" if c in "-." else c.upper() if "a" <= c <= "z" else c for c in name)


def percent_encode(value: bytes | str) -> str:
    """Percent-encodes everything but ``A-Za-z0-9-._~``."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in data)


def _validate_name(name: str) -> None:
    reason = None
    if name == "":
        reason = "empty"
    elif "/" in name:
        reason = "contains '/'"
    elif "\0" in name:
        reason = "contains a NUL byte"
    elif ".." in name:
        reason = "contains '..'"
    elif "=" in name:
        reason = "contains '='"
    if reason is not None:
        raise SecretError("invalid_name", f"invalid secret name {_quote(name)}: {reason}")


def _trim_newlines(b: bytes | bytearray) -> bytearray:
    n = len(b)
    while n > 0 and b[n - 1] == 0x0A:
        n -= 1
        if n > 0 and b[n - 1] == 0x0D:
            n -= 1
    return bytearray(b[:n])


class _IoFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _read_file(path: str, missing_is_none: bool) -> bytearray | None:
    """At most MAX_SECRET_LEN bytes of ``path``; ``None`` when missing and ``missing_is_none``."""
    try:
        with open(path, "rb") as f:
            data = bytearray(f.read(MAX_SECRET_LEN + 1))
    except FileNotFoundError:
        if missing_is_none:
            return None
        raise _IoFailure("ENOENT", os.strerror(errno.ENOENT)) from None
    except OSError as e:
        code = errno.errorcode.get(e.errno or 0, "EIO")
        raise _IoFailure(code, e.strerror or str(e)) from None
    if len(data) > MAX_SECRET_LEN:
        data[:] = bytes(len(data))
        raise _IoFailure("EFBIG", f"secret file is larger than {MAX_SECRET_LEN} bytes")
    return data


def _finish(name: str, value: bytes | bytearray, source: str) -> Secret:
    trimmed = _trim_newlines(value)
    if not trimmed:
        raise SecretError("empty", f"secret {_quote(name)} from {source} is empty")
    return Secret(trimmed, source)


def _io_error(name: str, source: str, e: _IoFailure) -> SecretError:
    return SecretError("io", f"cannot read secret {_quote(name)} from {source}: {e.message} ({e.code})")


def _split_url(url: str) -> tuple[str, str, str] | None:
    """``(scheme, authority, base path)`` of an http(s) URL without user info."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        return None
    authority, slash, path = rest.partition("/")
    if authority == "" or "@" in authority:
        return None
    return scheme, authority, (slash + path).rstrip("/")


def _scrub(text: str, hide: list[str | None]) -> str:
    out = text[:200]
    for h in hide:
        if h:
            out = out.replace(h, "<redacted>")
    return out


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def profile_keys(text: str, profile: str) -> tuple[str | None, str | None, str | None]:
    """``(access key id, secret key, session token)`` of ``[profile]`` in an AWS credentials file."""
    section = None
    key_id = secret = token = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(";"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section != profile:
            continue
        k, eq, v = line.partition("=")
        if not eq:
            continue
        k, v = k.strip(), v.strip()
        if k == "aws_access_key_id":
            key_id = v
        elif k == "aws_secret_access_key":
            secret = v
        elif k == "aws_session_token":
            token = v
    return key_id, secret, token


class RemoteCache:
    """Remote values by store and path, shared by the managers that hold it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[Secret, float]] = {}

    def clear(self) -> None:
        with self.lock:
            for secret, _ in self.entries.values():
                secret.wipe()
            self.entries.clear()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, never followed: they would carry the token elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

Env = Mapping[str, str] | Callable[[str], str | None]
_shared_cache = RemoteCache()


class SecretsManager:
    """Looks secrets up in a directory, an environment and the configured stores.

    ``get(name)`` reads ``<dir>/<name>`` (``$SECRETS_DIR``, default
    ``/run/secrets``), then the file named by ``$<NAME>_FILE``, then
    ``$<NAME>``, then Vault KV v2 and AWS Secrets Manager when configured, in
    the order ``$SECRETS_ORDER`` gives (default ``files,env,vault,aws``).
    """

    def __init__(self, dir: str | None = None, env: Env | None = None, cache: RemoteCache | None = None) -> None:
        source: Env = os.environ if env is None else env
        if callable(source):
            self._env: Callable[[str], str | None] = source
        else:
            mapping = source
            self._env = mapping.get
        if dir is None:
            dir = self._env("SECRETS_DIR") or None
        self.dir: str = dir or DEFAULT_DIR
        self._cache = cache if cache is not None else (_shared_cache if env is None else RemoteCache())

    def __repr__(self) -> str:
        return f"SecretsManager(dir={self.dir!r})"

    # ---- settings ----

    def _var(self, key: str) -> str | None:
        v = self._env(key)
        return v if v else None

    def _var_bytes(self, key: str) -> bytes | None:
        v = self._var(key)
        return None if v is None else os.fsencode(v)

    def _setting(self, key: str, strip: str | None = None) -> str | None:
        v = self._var(key)
        if v is None:
            return None
        v = v.strip()
        if strip:
            v = v.strip(strip)
        return v or None

    def _plain(self, key: str, default: str) -> str:
        return self._var(key) or default

    def _number(self, key: str, default: str, low: int, high: int, reason: str) -> str:
        raw = self._plain(key, default).strip()
        if re.fullmatch(r"\+?[0-9]+", raw) and low <= int(raw) <= high:
            return str(int(raw))
        raise SecretError("invalid_var", f"${key} {reason}")

    def _order(self) -> list[tuple[str, bool]]:
        raw = self._var("SECRETS_ORDER")
        if raw is None:
            return [(p, False) for p in _PROVIDERS]
        order: list[tuple[str, bool]] = []
        for item in raw.split(","):
            p = item.strip()
            if p not in _PROVIDERS:
                raise SecretError(
                    "invalid_var", "$SECRETS_ORDER must be a comma-separated list of files, env, vault and aws"
                )
            if any(q == p for q, _ in order):
                raise SecretError("invalid_var", "$SECRETS_ORDER names a provider twice")
            order.append((p, True))
        return order

    # ---- lookup ----

    def get(self, name: str) -> Secret:
        """Reads the secret ``name`` (a :class:`SecretKey` or a string); raises :class:`SecretError`."""
        name = str(name)
        _validate_name(name)
        order = self._order()
        var = env_var_name(name)
        file_var = f"{var}_FILE"
        direct = self._var_bytes(var)
        file_path = self._var(file_var)
        if direct is not None and file_path is not None:
            raise SecretError("conflict", f"secret {_quote(name)}: both ${var} and ${file_var} are set; set only one")
        looked: list[str] = []
        for provider, explicit in order:
            if provider == "files":
                dir_path = os.path.join(self.dir, name)
                try:
                    data = _read_file(dir_path, True)
                except _IoFailure as e:
                    raise _io_error(name, dir_path, e) from None
                if data is not None:
                    return _finish(name, data, dir_path)
                looked.append(dir_path)
                if file_path is not None:
                    source = f"${file_var} ({file_path})"
                    try:
                        data = _read_file(file_path, False)
                    except _IoFailure as e:
                        raise _io_error(name, source, e) from None
                    assert data is not None
                    return _finish(name, data, source)
                looked.append(f"${file_var}")
            elif provider == "env":
                if direct is not None:
                    return _finish(name, direct, f"${var}")
                looked.append(f"${var}")
            elif provider == "vault":
                found = self._vault(name, explicit, looked)
                if found is not None:
                    return found
            else:
                found = self._aws(name, explicit, looked)
                if found is not None:
                    return found
        raise SecretError("not_found", f"secret {_quote(name)} not found; looked at {', '.join(looked)}", looked)

    def _part(self, name: str, missing: list[str], looked: list[str]) -> Secret | None:
        try:
            return self.get(name)
        except SecretError as e:
            if e.kind != "not_found":
                raise
            missing.append(name)
            looked.extend(e.looked)
            return None

    @staticmethod
    def _cannot_build(name: str, missing: list[str], looked: list[str]) -> SecretError:
        return SecretError(
            "cannot_build",
            f"secret {_quote(name)} not found and cannot be built: missing {', '.join(missing)}; "
            f"looked at {', '.join(looked)}",
            looked,
            missing,
        )

    def get_database_url(self) -> Secret:
        """The ``database_url`` secret when found, else ``postgresql://user:password@host:port/db``
        built from ``postgres_user``, ``postgres_password`` and ``POSTGRES_HOST`` (default
        ``postgres``), ``POSTGRES_PORT`` (5432), ``POSTGRES_DB`` (the user); parts percent-encoded."""
        try:
            return self.get("database_url")
        except SecretError as e:
            if e.kind != "not_found":
                raise
            looked = list(e.looked)
        missing: list[str] = []
        user = self._part("postgres_user", missing, looked)
        password = self._part("postgres_password", missing, looked)
        if user is None or password is None:
            raise self._cannot_build("database_url", missing, looked)
        host = self._plain("POSTGRES_HOST", "postgres")
        port = self._number("POSTGRES_PORT", "5432", 1, 65535, _PORT_REASON)
        db = self._var_bytes("POSTGRES_DB")
        url = (
            f"postgresql://{percent_encode(user.expose())}:{percent_encode(password.expose())}"
            f"@{host}:{port}/{percent_encode(db if db is not None else user.expose())}"
        )
        return Secret(url.encode("utf-8"), "built from postgres_user, postgres_password")

    def get_redis_url(self) -> Secret:
        """The ``redis_url`` secret when found, else ``redis://:password@host:port/db`` built from
        ``redis_password`` and ``REDIS_HOST`` (default ``redis``), ``REDIS_PORT`` (6379), ``REDIS_DB`` (0)."""
        try:
            return self.get("redis_url")
        except SecretError as e:
            if e.kind != "not_found":
                raise
            looked = list(e.looked)
        missing: list[str] = []
        password = self._part("redis_password", missing, looked)
        if password is None:
            raise self._cannot_build("redis_url", missing, looked)
        host = self._plain("REDIS_HOST", "redis")
        port = self._number("REDIS_PORT", "6379", 1, 65535, _PORT_REASON)
        db = self._number("REDIS_DB", "0", 0, 0xFFFFFFFF, "is not a database number")
        url = f"redis://:{percent_encode(password.expose())}@{host}:{port}/{db}"
        return Secret(url.encode("utf-8"), "built from redis_password")

    # ---- remote stores ----

    def _cached_or_fetch(self, key: str, fetch: Callable[[], Secret | None]) -> Secret | None:
        ttl = int(
            self._number(
                "SECRETS_CACHE_SECONDS", str(DEFAULT_CACHE_SECONDS), 0, 0xFFFFFFFF, "is not a number of seconds"
            )
        )
        with self._cache.lock:
            hit = self._cache.entries.get(key)
            if hit is not None:
                secret, fetched = hit
                if time.monotonic() - fetched < ttl:
                    return Secret(secret._bytes, secret.source)
                secret.wipe()
                del self._cache.entries[key]
        got = fetch()
        if got is not None and ttl > 0:
            with self._cache.lock:
                self._cache.entries[key] = (Secret(got._bytes, got.source), time.monotonic())
        return got

    @staticmethod
    def _request(
        url: str, method: str, headers: dict[str, str], body: bytes | None, fail: Callable[[str], SecretError]
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with _OPENER.open(req, timeout=_TIMEOUT) as res:
                status = int(res.status)
                data = res.read(_MAX_BODY + 1)
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                data = e.read(_MAX_BODY + 1)
            except OSError as err:
                raise fail(f"HTTP {status}, reading the body failed: {err}") from None
            finally:
                e.close()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise fail(f"request failed: {reason}") from None
        if len(data) > _MAX_BODY:
            raise fail(f"HTTP {status}, reading the body failed: the body is larger than {_MAX_BODY} bytes")
        return status, data

    def _vault(self, name: str, explicit: bool, looked: list[str]) -> Secret | None:
        prefix = self._setting("SECRETS_VAULT_PREFIX", "/")
        if prefix is None:
            if explicit:
                raise SecretError("invalid_var", "$SECRETS_VAULT_PREFIX must be set when $SECRETS_ORDER names vault")
            return None
        raw_addr = self._var("VAULT_ADDR")
        if raw_addr is None:
            raise SecretError("invalid_var", "$VAULT_ADDR must be set when $SECRETS_VAULT_PREFIX is")
        addr = raw_addr.strip().rstrip("/")
        if _split_url(addr) is None:
            raise SecretError("invalid_var", "$VAULT_ADDR is not an http:// or https:// URL")
        mount = self._setting("SECRETS_VAULT_MOUNT", "/") or "secret"
        namespace = self._setting("VAULT_NAMESPACE", "/")
        path = f"{mount}/data/{prefix}/{name}"
        source = f"vault {path} at {addr}"
        looked.append(source)

        def fail(reason: str) -> SecretError:
            return SecretError("provider", f"cannot read secret {_quote(name)} from {source}: {reason}")

        def fetch() -> Secret | None:
            token = self._vault_token(fail)
            url = f"{addr}/v1/" + "/".join(percent_encode(s) for s in path.split("/"))
            headers = {"X-Vault-Token": token, "X-Vault-Request": "true", "User-Agent": "secrets-reader"}
            if namespace is not None:
                headers["X-Vault-Namespace"] = namespace
            status, body = self._request(url, "GET", headers, None, fail)
            data = _parse_json(body)
            if status == 404:
                return None
            if status != 200:
                errors = data.get("errors") if isinstance(data, dict) else None
                text = "; ".join(e for e in errors if isinstance(e, str)) if isinstance(errors, list) else ""
                text = _scrub(text, [token])
                raise fail(f"HTTP {status}: {text}" if text else f"HTTP {status}")
            if data is None:
                raise fail("the response is not JSON")
            inner = data.get("data") if isinstance(data, dict) else None
            entry = inner.get("data") if isinstance(inner, dict) else None
            if not isinstance(entry, dict):
                raise fail("the response has no data.data (is the mount KV version 2?)")
            if name not in entry:
                raise fail(f"the entry has no key {_quote(name)} (keys: {', '.join(sorted(entry))})")
            value = entry[name]
            if not isinstance(value, str):
                raise fail(f"the entry's key {_quote(name)} is not a string")
            return _finish(name, value.encode("utf-8"), source)

        return self._cached_or_fetch(f"vault {addr} {namespace} {path}", fetch)

    def _vault_token(self, fail: Callable[[str], SecretError]) -> str:
        direct = self._var("VAULT_TOKEN")
        file = self._var("VAULT_TOKEN_FILE")
        if direct is not None and file is not None:
            raise SecretError("invalid_var", "$VAULT_TOKEN_FILE and $VAULT_TOKEN are both set; set only one")
        if direct is not None:
            token = bytearray(os.fsencode(direct))
        elif file is not None:
            try:
                data = _read_file(file, False)
            except _IoFailure as e:
                raise _io_error("vault token", f"$VAULT_TOKEN_FILE ({file})", e) from None
            assert data is not None
            token = data
        else:
            raise fail("no token: set $VAULT_TOKEN or $VAULT_TOKEN_FILE")
        return _trim_newlines(token).decode("utf-8", "replace")

    def _aws(self, name: str, explicit: bool, looked: list[str]) -> Secret | None:
        prefix = self._setting("SECRETS_AWS_PREFIX")
        if prefix is None:
            if explicit:
                raise SecretError("invalid_var", "$SECRETS_AWS_PREFIX must be set when $SECRETS_ORDER names aws")
            return None
        region = self._setting("AWS_REGION") or self._setting("AWS_DEFAULT_REGION")
        if region is None:
            raise SecretError(
                "invalid_var", "$AWS_REGION (or $AWS_DEFAULT_REGION) must be set when $SECRETS_AWS_PREFIX is"
            )
        endpoint_var = "AWS_ENDPOINT_URL_SECRETS_MANAGER"
        endpoint = self._setting(endpoint_var)
        if endpoint is None:
            endpoint_var = "AWS_ENDPOINT_URL"
            endpoint = self._setting(endpoint_var)
        if endpoint is None:
            endpoint_var = ""
            endpoint = f"https://secretsmanager.{region}.amazonaws.com"
        endpoint = endpoint.rstrip("/")
        parts = _split_url(endpoint)
        if parts is None:
            raise SecretError("invalid_var", f"${endpoint_var} is not an http:// or https:// URL")
        authority = parts[1]
        secret_id = f"{prefix.rstrip('/')}/{name}"
        source = f"aws secretsmanager {secret_id} in {region}"
        looked.append(source)

        def fail(reason: str) -> SecretError:
            return SecretError("provider", f"cannot read secret {_quote(name)} from {source}: {reason}")

        def fetch() -> Secret | None:
            key_id, secret_key, session_token = self._aws_credentials(fail)
            body = json.dumps({"SecretId": secret_id}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            headers = {
                "content-type": "application/x-amz-json-1.1",
                "host": authority,
                "x-amz-target": "secretsmanager.GetSecretValue",
            }
            signed = sign(
                access_key=key_id,
                secret_key=secret_key,
                session_token=session_token,
                region=region,
                service="secretsmanager",
                amz_date=amz_date(),
                method="POST",
                path=(parts[2] or "") + "/",
                headers=headers,
                body=body,
            )
            sent = {**headers, **signed.headers, "user-agent": "secrets-reader"}
            del sent["host"]  # urllib sends the URL's authority, as signed
            status, answer = self._request(f"{endpoint}/", "POST", sent, body, fail)
            data = _parse_json(answer)
            if status != 200:

                def field(k: str) -> str | None:
                    v = data.get(k) if isinstance(data, dict) else None
                    return v if isinstance(v, str) else None

                kind = (field("__type") or "").rsplit("#", 1)[-1]
                if kind == "ResourceNotFoundException":
                    return None
                message = field("message") or field("Message")
                text = _scrub(kind if message is None else f"{kind}: {message}", [secret_key, session_token])
                raise fail(f"HTTP {status}: {text}" if text else f"HTTP {status}")
            if not isinstance(data, dict):
                raise fail("the response is not JSON")
            if isinstance(data.get("SecretString"), str):
                return _finish(name, data["SecretString"].encode("utf-8"), source)
            if isinstance(data.get("SecretBinary"), str):
                try:
                    raw = base64.b64decode(data["SecretBinary"], validate=True)
                except (binascii.Error, ValueError):
                    raise fail("SecretBinary is not valid base64") from None
                return _finish(name, raw, source)
            raise fail("the response has neither SecretString nor SecretBinary")

        return self._cached_or_fetch(f"aws {endpoint} {region} {secret_id}", fetch)

    def _aws_credentials(self, fail: Callable[[str], SecretError]) -> tuple[str, str, str | None]:
        key_id = self._setting("AWS_ACCESS_KEY_ID")
        secret = self._var("AWS_SECRET_ACCESS_KEY")
        if key_id is not None and secret is not None:
            return key_id, secret, self._var("AWS_SESSION_TOKEN")
        if key_id is not None or secret is not None:
            raise fail("set both $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or neither")
        path = self._var("AWS_SHARED_CREDENTIALS_FILE")
        if path is None:
            home = self._var("HOME")
            if home is None:
                raise fail(_NO_CREDENTIALS)
            path = os.path.join(home, ".aws/credentials")
        profile = self._setting("AWS_PROFILE") or "default"
        try:
            text = _read_file(path, True)
        except _IoFailure as e:
            raise fail(f"cannot read the credentials file {path}: {e.message}") from None
        if text is None:
            raise fail(_NO_CREDENTIALS)
        found = profile_keys(text.decode("utf-8", "replace"), profile)
        text[:] = bytes(len(text))
        if found[0] is None or found[1] is None:
            raise fail(f"profile [{profile}] of {path} has no aws_access_key_id and aws_secret_access_key")
        return found[0], found[1], found[2]


_manager: SecretsManager | None = None
_manager_lock = threading.Lock()


def get_secrets_manager() -> SecretsManager:
    """The process's manager: ``os.environ``, ``$SECRETS_DIR`` and one cache of remote values."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = SecretsManager()
        return _manager


def get_secret(name: str) -> Secret:
    """``get_secrets_manager().get(name)``."""
    return get_secrets_manager().get(name)


def get_database_url() -> Secret:
    """``get_secrets_manager().get_database_url()``."""
    return get_secrets_manager().get_database_url()


def get_redis_url() -> Secret:
    """``get_secrets_manager().get_redis_url()``."""
    return get_secrets_manager().get_redis_url()
