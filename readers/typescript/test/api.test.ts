// What the conformance cases cannot say: the module's functions and their
// defaults, the sync variants, and how a Secret prints.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { format, inspect } from "node:util";
import {
  DEFAULT_DIR,
  SecretError,
  SecretReader,
  envVarName,
  getDatabaseUrl,
  getDatabaseUrlSync,
  getRedisUrlSync,
  getSecret,
  getSecretSync,
  percentEncode,
  profileKeys,
} from "../src/index.js";

const VALUE = "s3cr3t-V4LUE-xyzzy";

function withDir(f: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "secrets-reader-ts-api-"));
    try {
      await f(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test("the directory is $SECRETS_DIR, else /run/secrets", () => {
  assert.equal(new SecretReader({ env: {} }).dir, DEFAULT_DIR);
  assert.equal(new SecretReader({ env: { SECRETS_DIR: "" } }).dir, DEFAULT_DIR);
  assert.equal(new SecretReader({ env: { SECRETS_DIR: "/s" } }).dir, "/s");
  assert.equal(new SecretReader({ env: { SECRETS_DIR: "/s" }, dir: "/t" }).dir, "/t");
});

test("module functions read process.env and $SECRETS_DIR", withDir(async (dir) => {
  writeFileSync(join(dir, "postgres_user"), "app\n");
  writeFileSync(join(dir, "postgres_password"), `${VALUE}\n`);
  process.env.SECRETS_DIR = dir;
  process.env.SR_TS_TEST = "from-env";
  try {
    // The module's default reader is made on first use; options make a new one.
    const opts = { env: process.env };
    assert.equal((await getSecret("postgres_password", opts)).exposeString(), VALUE);
    assert.equal((await getSecret("sr_ts_test", opts)).source, "$SR_TS_TEST");
    assert.equal(getSecretSync("sr_ts_test", opts).exposeString(), "from-env");
    const url = await getDatabaseUrl(opts);
    assert.equal(url.exposeString(), `postgresql://app:${VALUE}@postgres:5432/app`);
    assert.equal(getDatabaseUrlSync(opts).exposeString(), url.exposeString());
    const fromDefault = await getSecret("postgres_password");
    assert.equal(fromDefault.exposeString(), VALUE);
  } finally {
    delete process.env.SECRETS_DIR;
    delete process.env.SR_TS_TEST;
  }
}));

test("sync variants read files and env, and refuse a configured store", withDir((dir) => {
  const env = { REDIS_PASSWORD: "a b", SECRETS_VAULT_PREFIX: "p" };
  assert.throws(() => getRedisUrlSync({ dir, env }), (e: unknown) => e instanceof SecretError && e.kind === "invalid_var");
  assert.equal(getRedisUrlSync({ dir, env: { REDIS_PASSWORD: "a b" } }).exposeString(), "redis://:a%20b@redis:6379/0");
  assert.throws(() => getSecretSync("x", { dir, env: { SECRETS_ORDER: "aws" } }), /async getSecret/);
  assert.throws(() => getSecretSync("x", { dir, env: {} }), (e: unknown) => e instanceof SecretError && e.kind === "not_found");
}));

test("a secret never prints its value", withDir(async (dir) => {
  writeFileSync(join(dir, "api_key"), VALUE);
  const s = await getSecret("api_key", { dir, env: {} });
  for (const shown of [
    String(s), `${s}`, s + "", JSON.stringify(s), JSON.stringify({ s }), inspect(s), inspect({ a: [s] }, { showHidden: true, depth: 9 }),
    format("%s %o %O %j", s, s, s, s), Object.keys(s).join(), JSON.stringify(Object.entries(s)),
  ]) {
    assert.ok(!shown.includes("V4LUE"), shown);
  }
  assert.equal(inspect(s), `Secret { source: ${join(dir, "api_key")}, value: <redacted> }`);
  assert.equal(s.exposeString(), VALUE);
  s.wipe();
  assert.ok(s.expose().every((b) => b === 0));
}));

test("helpers", () => {
  assert.equal(envVarName("my-api.key"), "MY_API_KEY");
  assert.equal(envVarName("straße"), "STRAßE");
  assert.equal(percentEncode("Az09-._~ !*'()é"), "Az09-._~%20%21%2A%27%28%29%C3%A9");
  const text = "[default]\naws_access_key_id = A1\naws_secret_access_key=S1\n\n# c\n[other]\naws_access_key_id=A2\naws_secret_access_key = S2\naws_session_token = T2\n";
  assert.deepEqual(profileKeys(text, "default"), { accessKey: "A1", secretKey: "S1" });
  assert.deepEqual(profileKeys(text, "other"), { accessKey: "A2", secretKey: "S2", sessionToken: "T2" });
  assert.deepEqual(profileKeys(text, "missing"), {});
});
