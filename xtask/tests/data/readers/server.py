"""The Python reader's live service for xtask/tests/it/compose_e2e.rs, run as
``python3 server.py PORT NAME...`` with the package beside it. ``GET /health``
answers ``ok``; any other GET reads every NAME through the package's public
API (a fresh read per request) and answers one line per secret,
``NAME LENGTH SHA256 SOURCE`` (tab-separated): a digest of the bytes read,
never the value. ``database_url`` and ``redis_url`` go through
``get_database_url()`` and ``get_redis_url()``."""

import hashlib
import platform
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from secrets_reader import Secret, SecretError, get_secrets_manager

PORT = int(sys.argv[1])
NAMES = sys.argv[2:]


def line(name: str) -> tuple[bool, str]:
    secrets = get_secrets_manager()
    try:
        secret: Secret
        if name == "database_url":
            secret = secrets.get_database_url()
        elif name == "redis_url":
            secret = secrets.get_redis_url()
        else:
            secret = secrets.get(name)
    except SecretError as e:  # never holds a value
        return False, f"{name}\terror: {e}\n"
    data = secret.expose()
    sha = hashlib.sha256(data).hexdigest()
    return True, f"{name}\t{len(data)}\t{sha}\t{secret.source}\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            status, body = 200, "ok\n"
        else:
            lines = [line(n) for n in NAMES]
            failed = [text for ok, text in lines if not ok]
            status = 500 if failed else 200
            body = "".join(failed if failed else [text for _, text in lines])
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


print(f"python {platform.python_version()}: serving {len(NAMES)} secrets on :{PORT}", file=sys.stderr, flush=True)
ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
