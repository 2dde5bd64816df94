"""The signer against AWS's published SigV4 test vector (post-vanilla), kept
in readers/conformance/sigv4.json for the TypeScript signer too."""

from __future__ import annotations

import json
import unittest
from datetime import datetime, timezone

from secrets_reader import amz_date, sign

from .test_conformance import CONFORMANCE


class SigV4(unittest.TestCase):
    def test_vectors(self) -> None:
        vectors = json.loads((CONFORMANCE / "sigv4.json").read_text("utf-8"))["vectors"]
        self.assertTrue(vectors)
        for v in vectors:
            with self.subTest(v["name"]):
                args = dict(
                    access_key=v["access_key"],
                    secret_key=v["secret_key"],
                    region=v["region"],
                    service=v["service"],
                    amz_date=v["amz_date"],
                    method=v["method"],
                    path=v["path"],
                    headers=v["headers"],
                    body=v["body"].encode("utf-8"),
                )
                signed = sign(**args)
                self.assertEqual(signed.canonical_request, v["canonical_request"])
                self.assertEqual(signed.string_to_sign, v["string_to_sign"])
                self.assertEqual(signed.headers["authorization"], v["authorization"])
                self.assertEqual(signed.headers["x-amz-date"], v["amz_date"])
                self.assertNotIn("x-amz-security-token", signed.headers)
                with_token = sign(**args, session_token="TOKEN")
                self.assertEqual(with_token.headers["x-amz-security-token"], "TOKEN")
                self.assertIn("SignedHeaders=host;x-amz-date;x-amz-security-token,", with_token.headers["authorization"])

    def test_amz_date(self) -> None:
        self.assertEqual(amz_date(datetime(2015, 8, 30, 12, 36, tzinfo=timezone.utc)), "20150830T123600Z")
