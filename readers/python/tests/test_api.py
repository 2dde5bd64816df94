"""What the conformance cases cannot say: the guide's API, its defaults, and
how a Secret prints, logs and refuses to be pickled."""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import secrets_reader
from secrets_reader import (
    DEFAULT_DIR,
    SecretError,
    SecretKey,
    SecretsManager,
    env_var_name,
    get_secrets_manager,
    percent_encode,
    profile_keys,
)

VALUE = "s3cr3t-V4LUE-xyzzy"


class Api(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def test_guide_usage(self) -> None:
        (self.dir / "postgres_user").write_text("r3mes\n")
        (self.dir / "postgres_password").write_text(VALUE + "\n")
        env = {"SECRETS_DIR": str(self.dir), "REDIS_PASSWORD": "a b"}
        with mock.patch.dict(os.environ, env):
            with mock.patch.object(secrets_reader._reader, "_manager", None):
                secrets = get_secrets_manager()
                self.assertIs(secrets, get_secrets_manager())
                self.assertEqual(secrets.dir, str(self.dir))
                self.assertEqual(secrets.get(SecretKey.POSTGRES_PASSWORD).expose_str(), VALUE)
                self.assertEqual(secrets.get("postgres_password").expose(), VALUE.encode())
                self.assertEqual(
                    secrets.get_database_url().expose_str(), f"postgresql://r3mes:{VALUE}@postgres:5432/r3mes"
                )
                self.assertEqual(secrets.get_redis_url().expose_str(), "redis://:a%20b@redis:6379/0")
                self.assertEqual(secrets_reader.get_secret("redis_password").source, "$REDIS_PASSWORD")
                self.assertEqual(secrets_reader.get_redis_url().source, "built from redis_password")
                self.assertEqual(secrets_reader.get_database_url().fingerprint(), secrets.get_database_url().fingerprint())

    def test_default_dir(self) -> None:
        self.assertEqual(SecretsManager(env={}).dir, DEFAULT_DIR)
        self.assertEqual(SecretsManager(env={"SECRETS_DIR": ""}).dir, DEFAULT_DIR)
        self.assertEqual(SecretsManager(env={"SECRETS_DIR": "/s"}).dir, "/s")
        self.assertEqual(SecretsManager(dir="/t", env={"SECRETS_DIR": "/s"}).dir, "/t")

    def test_secret_never_shows_its_value(self) -> None:
        (self.dir / "api_key").write_text(VALUE)
        s = SecretsManager(dir=str(self.dir), env={}).get("api_key")
        stream = io.StringIO()
        logger = logging.getLogger("secrets-reader-test")
        handler = logging.StreamHandler(stream)
        logger.addHandler(handler)
        try:
            logger.warning("value %s %r", s, s)
            logger.warning(f"value {s} {s!r} {s:>30}")
            logger.warning("dict %s", {"k": s})
        finally:
            logger.removeHandler(handler)
        for shown in (str(s), repr(s), f"{s}", "%s" % s, str([s]), stream.getvalue()):
            self.assertNotIn("V4LUE", shown)
        self.assertEqual(repr(s), f"Secret(source={str(self.dir / 'api_key')!r}, value=<redacted>)")
        with self.assertRaises(TypeError):
            pickle.dumps(s)
        self.assertEqual(s.expose_str(), VALUE)
        s.wipe()
        self.assertEqual(s.expose(), bytes(len(VALUE)))

    def test_errors(self) -> None:
        with self.assertRaises(SecretError) as e:
            SecretsManager(dir=str(self.dir), env={"A": VALUE, "A_FILE": VALUE}).get("a")
        self.assertEqual(e.exception.kind, "conflict")
        self.assertNotIn("V4LUE", repr(e.exception))

    def test_helpers(self) -> None:
        self.assertEqual(env_var_name("my-api.key"), "MY_API_KEY")
        self.assertEqual(env_var_name("straße"), "STRAßE")
        self.assertEqual(percent_encode("Az09-._~ !*'()é"), "Az09-._~%20%21%2A%27%28%29%C3%A9")
        text = (
            "[default]\naws_access_key_id = A1\naws_secret_access_key=S1\n\n# c\n[other]\n"
            "aws_access_key_id=A2\naws_secret_access_key = S2\naws_session_token = T2\n"
        )
        self.assertEqual(profile_keys(text, "default"), ("A1", "S1", None))
        self.assertEqual(profile_keys(text, "other"), ("A2", "S2", "T2"))
        self.assertEqual(profile_keys(text, "missing"), (None, None, None))
        self.assertEqual(SecretKey.POSTGRES_PASSWORD, "postgres_password")
