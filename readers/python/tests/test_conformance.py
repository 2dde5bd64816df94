"""Runs every case of readers/conformance/*.json against this reader, as the
Rust and TypeScript suites do. Provider cases get a stand-in HTTP server on
127.0.0.1 that serves the case's canned answers and checks each request
(path, headers, the SigV4 Authorization recomputed from what arrived)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from secrets_reader import RemoteCache, Secret, SecretError, SecretsManager, sign

CONFORMANCE = Path(__file__).resolve().parent.parent.parent / "conformance"


def load_cases() -> list[tuple[str, list[str], dict[str, Any]]]:
    out = []
    for path in sorted(CONFORMANCE.glob("*.json")):
        doc = json.loads(path.read_text("utf-8"))
        for case in doc.get("cases", []):
            out.append((path.name, doc.get("hidden", []), case))
    return out


class StandIn:
    """Serves a case's routes on a free loopback port until closed."""

    def __init__(self, routes: list[dict[str, Any]]) -> None:
        self.routes = routes
        self.hits = [0] * len(routes)
        self.failures: list[str] = []
        self.lock = threading.Lock()
        stand = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                status, headers, payload = stand.answer(self.command, self.path, self.headers, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(payload)))
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(payload)
                self.close_connection = True

            do_GET = do_POST = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            body_json = json.loads(body.decode("utf-8"))
        except ValueError:
            body_json = None
        with self.lock:
            for i, route in enumerate(self.routes):
                if route["method"] == method and route["path"] == path and (
                    "body" not in route or route["body"] == body_json
                ):
                    break
            else:
                self.failures.append(f"unexpected request {method} {path} {body!r}")
                return 599, {}, b"no route"
            self.hits[i] += 1
            hit = self.hits[i]
        for k, v in route.get("headers", {}).items():
            if headers.get(k) != v:
                self.failures.append(f"{method} {path}: header {k} is {headers.get(k)!r}, want {v!r}")
        for k in route.get("absent", []):
            if headers.get(k) is not None:
                self.failures.append(f"{method} {path}: header {k} should be absent")
        if "sigv4" in route:
            self.check_sigv4(route["sigv4"], method, path, headers, body)
        r = route["responses"][min(hit - 1, len(route["responses"]) - 1)]
        extra = dict(r.get("headers", {}))
        if "json" in r:
            extra.setdefault("content-type", "application/json")
            return r["status"], extra, json.dumps(r["json"]).encode("utf-8")
        return r["status"], extra, r.get("body", "").encode("utf-8")

    def check_sigv4(self, want: dict[str, str], method: str, path: str, headers: Any, body: bytes) -> None:
        auth = headers.get("authorization") or ""
        date = headers.get("x-amz-date") or ""
        shape = (
            rf"AWS4-HMAC-SHA256 Credential={re.escape(want['access_key'])}/(\d{{8}})/{re.escape(want['region'])}/"
            rf"{re.escape(want['service'])}/aws4_request, SignedHeaders={re.escape(want['signed_headers'])}, "
            r"Signature=[0-9a-f]{64}"
        )
        m = re.fullmatch(shape, auth)
        if not m or not re.fullmatch(r"\d{8}T\d{6}Z", date) or m.group(1) != date[:8]:
            self.failures.append(f"Authorization {auth!r} (x-amz-date {date}) is not the SigV4 shape wanted")
            return
        signed = {
            n: headers.get(n) or ""
            for n in want["signed_headers"].split(";")
            if n not in ("x-amz-date", "x-amz-security-token")
        }
        again = sign(
            access_key=want["access_key"],
            secret_key=want["secret_key"],
            session_token=headers.get("x-amz-security-token"),
            region=want["region"],
            service=want["service"],
            amz_date=date,
            method=method,
            path=path,
            headers=signed,
            body=body,
        )
        if again.headers["authorization"] != auth:
            self.failures.append(f"SigV4 signature does not verify: {auth}")


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def write_files(root: Path, files: dict[str, Any], expand: Any) -> None:
    for rel, spec in files.items():
        path = root / expand(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, str):
            path.write_bytes(spec.encode("utf-8"))
        elif spec.get("dir"):
            path.mkdir(parents=True, exist_ok=True)
        elif "hex" in spec:
            path.write_bytes(bytes.fromhex(spec["hex"]))
        else:
            path.write_bytes((spec["repeat"] * spec["count"]).encode("utf-8"))


class Conformance(unittest.TestCase):
    maxDiff = None

    def test_has_cases(self) -> None:
        n = len(load_cases())
        print(f"conformance: {n} cases")
        self.assertGreaterEqual(n, 100)

    def run_case(self, hidden: list[str], case: dict[str, Any]) -> None:
        root = Path(tempfile.mkdtemp(prefix="secrets-reader-py-"))
        secrets_dir = root / "secrets"
        secrets_dir.mkdir()
        stand = StandIn(case["http"]) if "http" in case else None
        try:
            values = {"root": str(root), "dir": str(secrets_dir), "closed": closed_url()}
            if stand:
                values["http"] = stand.url

            def expand(s: str) -> str:
                return re.sub(r"\{(root|dir|http|closed)\}", lambda m: values.get(m.group(1), m.group(0)), s)

            write_files(root, case.get("files", {}), expand)
            env = {k: expand(v) for k, v in case.get("env", {}).items()}
            manager = SecretsManager(dir=str(secrets_dir), env=env.get, cache=RemoteCache())
            for i, step in enumerate(case["steps"]):
                where = f"{case['name']}, step {i + 1}"
                if "sleep_ms" in step:
                    time.sleep(step["sleep_ms"] / 1000)
                if "write" in step:
                    write_files(root, step["write"], expand)
                if "set_env" in step:
                    env.update({k: expand(v) for k, v in step["set_env"].items()})
                if "call" not in step:
                    continue
                want = step.get("expect", {})
                got: Secret | None = None
                err: Exception | None = None
                try:
                    if step["call"] == "get":
                        got = manager.get(step["name"])
                    elif step["call"] == "database_url":
                        got = manager.get_database_url()
                    else:
                        got = manager.get_redis_url()
                    if want.get("error") == "not_utf8":
                        got.expose_str()
                except Exception as e:  # noqa: BLE001 - checked below
                    err = e
                if "error" in want:
                    self.assertIsInstance(err, SecretError, f"{where}: wanted {want['error']}, got {err!r}")
                    assert isinstance(err, SecretError)
                    self.assertEqual(err.kind, want["error"], f"{where}: {err}")
                    if "message" in want:
                        self.assertEqual(str(err), expand(want["message"]), where)
                    if "starts_with" in want:
                        self.assertTrue(str(err).startswith(expand(want["starts_with"])), f"{where}: {err}")
                    for part in want.get("contains", []):
                        self.assertIn(expand(part), str(err), where)
                    for h in hidden:
                        for shown in (str(err), repr(err), repr(err.args)):
                            self.assertNotIn(h, shown, where)
                    continue
                if err is not None:
                    self.fail(f"{where}: {err!r}")
                assert got is not None
                if "value" in want:
                    self.assertEqual(got.expose_str(), expand(want["value"]), where)
                if "hex" in want:
                    self.assertEqual(got.expose().hex(), want["hex"], where)
                if "source" in want:
                    self.assertEqual(got.source, expand(want["source"]), where)
                if "fingerprint" in want:
                    self.assertEqual(got.fingerprint(), want["fingerprint"], where)
                if "length" in want:
                    self.assertEqual(len(got), want["length"], where)
                self.assertEqual(str(got), "<redacted>")
                self.assertEqual(f"{got}", "<redacted>")
                self.assertEqual(repr(got), f"Secret(source={got.source!r}, value=<redacted>)")
                for h in hidden:
                    for shown in (str(got), repr(got), repr([got]), f"{got!r:>10} {got}"):
                        self.assertNotIn(h, shown, where)
            if stand:
                self.assertEqual(stand.failures, [], f"{case['name']}: stand-in checks")
                for i, route in enumerate(case["http"]):
                    if "count" in route:
                        self.assertEqual(
                            stand.hits[i], route["count"], f"{case['name']}: requests to {route['method']} {route['path']}"
                        )
        finally:
            if stand:
                stand.close()
            shutil.rmtree(root, ignore_errors=True)


def _add_tests() -> None:
    for n, (file, hidden, case) in enumerate(load_cases()):
        slug = re.sub(r"\W+", "_", f"{file[:-5]}_{case['name']}").strip("_").lower()

        def test(self: Conformance, hidden: list[str] = hidden, case: dict[str, Any] = case) -> None:
            self.run_case(hidden, case)

        test.__doc__ = f"{file}: {case['name']}"
        setattr(Conformance, f"test_{n:03d}_{slug}", test)


_add_tests()
