// The signer against AWS's published SigV4 test vector (post-vanilla), kept
// in readers/conformance/sigv4.json for the Python signer too.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { amzDate, signV4 } from "../src/index.js";
import { CONFORMANCE } from "./support.js";

interface Vector {
  name: string;
  access_key: string;
  secret_key: string;
  region: string;
  service: string;
  amz_date: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  canonical_request: string;
  string_to_sign: string;
  authorization: string;
}

const { vectors } = JSON.parse(readFileSync(join(CONFORMANCE, "sigv4.json"), "utf8")) as { vectors: Vector[] };

for (const v of vectors) {
  test(`sigv4 ${v.name}`, () => {
    const signed = signV4({
      accessKey: v.access_key,
      secretKey: v.secret_key,
      region: v.region,
      service: v.service,
      amzDate: v.amz_date,
      method: v.method,
      path: v.path,
      headers: v.headers,
      body: v.body,
    });
    assert.equal(signed.canonicalRequest, v.canonical_request);
    assert.equal(signed.stringToSign, v.string_to_sign);
    assert.equal(signed.headers.authorization, v.authorization);
    assert.equal(signed.headers["x-amz-date"], v.amz_date);
    assert.equal(signed.headers["x-amz-security-token"], undefined);
    const withToken = signV4({ ...{ accessKey: v.access_key, secretKey: v.secret_key, region: v.region, service: v.service },
      amzDate: v.amz_date, method: v.method, path: v.path, headers: v.headers, body: v.body, sessionToken: "TOKEN" });
    assert.equal(withToken.headers["x-amz-security-token"], "TOKEN");
    assert.match(withToken.headers.authorization!, /SignedHeaders=host;x-amz-date;x-amz-security-token,/);
  });
}

test("amzDate", () => {
  assert.equal(amzDate(new Date(Date.UTC(2015, 7, 30, 12, 36, 0))), "20150830T123600Z");
});
