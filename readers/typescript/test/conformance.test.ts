// Runs every case of readers/conformance/*.json against this reader, as the
// Rust and Python suites do. Provider cases get a stand-in HTTP server on
// 127.0.0.1 that serves the case's canned answers and checks each request
// (path, headers, the SigV4 Authorization recomputed from what arrived).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { inspect, isDeepStrictEqual } from "node:util";
import { CONFORMANCE } from "./support.js";
import { RemoteCache, Secret, SecretError, SecretReader, signV4 } from "../src/index.js";


type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
interface Expect {
  value?: string;
  hex?: string;
  source?: string;
  fingerprint?: string;
  length?: number;
  error?: string;
  message?: string;
  starts_with?: string;
  contains?: string[];
}
interface Step {
  call?: "get" | "database_url" | "redis_url";
  name?: string;
  expect?: Expect;
  sleep_ms?: number;
  write?: Record<string, FileSpec>;
  set_env?: Record<string, string>;
}
type FileSpec = string | { hex?: string; repeat?: string; count?: number; dir?: boolean };
interface Sigv4Check {
  access_key: string;
  secret_key: string;
  region: string;
  service: string;
  signed_headers: string;
}
interface Route {
  method: string;
  path: string;
  body?: Json;
  headers?: Record<string, string>;
  absent?: string[];
  sigv4?: Sigv4Check;
  responses: { status: number; json?: Json; body?: string; headers?: Record<string, string> }[];
  count?: number;
}
interface Case {
  name: string;
  rule: string;
  files?: Record<string, FileSpec>;
  env?: Record<string, string>;
  http?: Route[];
  steps: Step[];
}

function loadCases(): { file: string; hidden: string[]; c: Case }[] {
  const out: { file: string; hidden: string[]; c: Case }[] = [];
  for (const file of readdirSync(CONFORMANCE).filter((f) => f.endsWith(".json")).sort()) {
    const doc = JSON.parse(readFileSync(join(CONFORMANCE, file), "utf8")) as { hidden?: string[]; cases?: Case[] };
    for (const c of doc.cases ?? []) out.push({ file, hidden: doc.hidden ?? [], c });
  }
  return out;
}

class StandIn {
  readonly hits: number[];
  readonly failures: string[] = [];
  readonly server: Server;
  constructor(readonly routes: Route[]) {
    this.hits = routes.map(() => 0);
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        const answer = this.answer(req, body);
        res.writeHead(answer.status, { connection: "close", ...answer.headers });
        res.end(answer.body);
      });
    });
  }
  async listen(): Promise<string> {
    await new Promise<void>((ok) => this.server.listen(0, "127.0.0.1", ok));
    const addr = this.server.address();
    assert.ok(addr !== null && typeof addr === "object");
    return `http://127.0.0.1:${addr.port}`;
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((ok) => this.server.close(() => ok()));
  }
  answer(req: IncomingMessage, body: Buffer): { status: number; headers: Record<string, string>; body: string } {
    const path = req.url ?? "";
    let bodyJson: unknown;
    try {
      bodyJson = JSON.parse(body.toString("utf8"));
    } catch {
      bodyJson = undefined;
    }
    const i = this.routes.findIndex(
      (r) => r.method === req.method && r.path === path && (r.body === undefined || isDeepStrictEqual(r.body, bodyJson)),
    );
    if (i < 0) {
      this.failures.push(`unexpected request ${req.method} ${path} ${body.toString("utf8")}`);
      return { status: 599, headers: {}, body: "no route" };
    }
    const route = this.routes[i]!;
    this.hits[i]!++;
    const header = (n: string): string | undefined => {
      const v = req.headers[n];
      return Array.isArray(v) ? v.join(",") : v;
    };
    for (const [k, v] of Object.entries(route.headers ?? {})) {
      if (header(k) !== v) this.failures.push(`${req.method} ${path}: header ${k} is ${header(k)}, want ${v}`);
    }
    for (const k of route.absent ?? []) {
      if (header(k) !== undefined) this.failures.push(`${req.method} ${path}: header ${k} should be absent`);
    }
    if (route.sigv4) this.checkSigv4(route.sigv4, req, body, header);
    const r = route.responses[Math.min(this.hits[i]! - 1, route.responses.length - 1)]!;
    if (r.json !== undefined) {
      return { status: r.status, headers: { "content-type": "application/json", ...r.headers }, body: JSON.stringify(r.json) };
    }
    return { status: r.status, headers: { ...r.headers }, body: r.body ?? "" };
  }
  checkSigv4(want: Sigv4Check, req: IncomingMessage, body: Buffer, header: (n: string) => string | undefined): void {
    const auth = header("authorization") ?? "";
    const date = header("x-amz-date") ?? "";
    const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const shape = new RegExp(
      `^AWS4-HMAC-SHA256 Credential=${esc(want.access_key)}/(\\d{8})/${esc(want.region)}/${esc(want.service)}/aws4_request, ` +
        `SignedHeaders=${esc(want.signed_headers)}, Signature=[0-9a-f]{64}$`,
    );
    const m = shape.exec(auth);
    if (!m || !/^\d{8}T\d{6}Z$/.test(date) || m[1] !== date.slice(0, 8)) {
      this.failures.push(`Authorization ${JSON.stringify(auth)} (x-amz-date ${date}) is not the SigV4 shape wanted`);
      return;
    }
    // Recompute from what arrived on the wire: the signed headers as received.
    const headers: Record<string, string> = {};
    for (const n of want.signed_headers.split(";")) {
      if (n !== "x-amz-date" && n !== "x-amz-security-token") headers[n] = header(n) ?? "";
    }
    const again = signV4({
      accessKey: want.access_key,
      secretKey: want.secret_key,
      sessionToken: header("x-amz-security-token"),
      region: want.region,
      service: want.service,
      amzDate: date,
      method: req.method ?? "",
      path: req.url ?? "",
      headers,
      body,
    });
    if (again.headers.authorization !== auth) this.failures.push(`SigV4 signature does not verify: ${auth}`);
  }
}

async function closedUrl(): Promise<string> {
  const s = createNetServer();
  await new Promise<void>((ok) => s.listen(0, "127.0.0.1", ok));
  const addr = s.address();
  assert.ok(addr !== null && typeof addr === "object");
  await new Promise((ok) => s.close(ok));
  return `http://127.0.0.1:${addr.port}`;
}

function writeFiles(root: string, files: Record<string, FileSpec>, expand: (s: string) => string): void {
  for (const [rel, spec] of Object.entries(files)) {
    const path = join(root, expand(rel));
    mkdirSync(dirname(path), { recursive: true });
    if (typeof spec === "string") writeFileSync(path, spec);
    else if (spec.dir) mkdirSync(path, { recursive: true });
    else if (spec.hex !== undefined) writeFileSync(path, Buffer.from(spec.hex, "hex"));
    else writeFileSync(path, (spec.repeat ?? "").repeat(spec.count ?? 0));
  }
}

function checkHidden(what: string, hidden: string[], where: string): void {
  for (const h of hidden) assert.ok(!what.includes(h), `${where}: ${JSON.stringify(h)} shown in ${what}`);
}

async function runCase(c: Case, hidden: string[]): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), "secrets-reader-ts-"));
  const dir = join(root, "secrets");
  mkdirSync(dir);
  const stand = c.http ? new StandIn(c.http) : undefined;
  try {
    const vars: Record<string, string> = { root, dir, closed: await closedUrl() };
    if (stand) vars.http = await stand.listen();
    const expand = (s: string) => s.replace(/\{(root|dir|http|closed)\}/g, (_, k: string) => vars[k] ?? `{${k}}`);
    writeFiles(root, c.files ?? {}, expand);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(c.env ?? {})) env[k] = expand(v);
    const reader = new SecretReader({ dir, env: (k) => env[k], cache: new RemoteCache() });
    for (const [i, step] of c.steps.entries()) {
      const where = `${c.name}, step ${i + 1}`;
      if (step.sleep_ms !== undefined) await new Promise((ok) => setTimeout(ok, step.sleep_ms));
      if (step.write) writeFiles(root, step.write, expand);
      if (step.set_env) for (const [k, v] of Object.entries(step.set_env)) env[k] = expand(v);
      if (!step.call) continue;
      const want = step.expect ?? {};
      let got: Secret | undefined;
      let err: unknown;
      try {
        got =
          step.call === "get"
            ? await reader.get(step.name ?? "")
            : step.call === "database_url"
              ? await reader.databaseUrl()
              : await reader.redisUrl();
        if (want.error === "not_utf8") got.exposeString();
      } catch (e) {
        err = e;
      }
      if (want.error !== undefined) {
        assert.ok(err instanceof SecretError, `${where}: wanted a ${want.error} error, got ${err === undefined ? "a value" : inspect(err)}`);
        assert.equal(err.kind, want.error, `${where}: ${err.message}`);
        if (want.message !== undefined) assert.equal(err.message, expand(want.message), where);
        if (want.starts_with !== undefined) {
          assert.ok(err.message.startsWith(expand(want.starts_with)), `${where}: ${err.message}`);
        }
        for (const part of want.contains ?? []) assert.ok(err.message.includes(expand(part)), `${where}: ${err.message}`);
        checkHidden(err.message, hidden, where);
        checkHidden(inspect(err), hidden, where);
        continue;
      }
      if (err !== undefined) assert.fail(`${where}: ${inspect(err)}`);
      assert.ok(got);
      if (want.value !== undefined) assert.equal(got.exposeString(), expand(want.value), where);
      if (want.hex !== undefined) assert.equal(got.expose().toString("hex"), want.hex, where);
      if (want.source !== undefined) assert.equal(got.source, expand(want.source), where);
      if (want.fingerprint !== undefined) assert.equal(got.fingerprint(), want.fingerprint, where);
      if (want.length !== undefined) assert.equal(got.length, want.length, where);
      // The value never shows in the string forms.
      assert.equal(String(got), "<redacted>");
      assert.equal(`${got}`, "<redacted>");
      assert.equal(JSON.stringify({ got }), '{"got":"<redacted>"}');
      assert.equal(inspect(got), `Secret { source: ${got.source}, value: <redacted> }`);
      checkHidden(inspect({ nested: [got] }, { depth: 5, showHidden: true }), hidden, where);
    }
    if (stand) {
      assert.deepEqual(stand.failures, [], `${c.name}: stand-in checks`);
      for (const [i, r] of c.http!.entries()) {
        if (r.count !== undefined) assert.equal(stand.hits[i], r.count, `${c.name}: requests to ${r.method} ${r.path}`);
      }
    }
  } finally {
    if (stand) await stand.close();
    rmSync(root, { recursive: true, force: true });
  }
}

const cases = loadCases();
test("the conformance suite has cases", () => {
  assert.ok(cases.length >= 100, `only ${cases.length} cases`);
  console.log(`conformance: ${cases.length} cases`);
});
for (const { file, hidden, c } of cases) {
  test(`${file}: ${c.name}`, () => runCase(c, hidden));
}
