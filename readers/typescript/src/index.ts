/**
 * Read a service's secrets the same way the Rust `secrets-reader` crate does,
 * without ever showing them. The rules are pinned by the conformance cases in
 * `readers/conformance/`, which the Rust, TypeScript and Python suites all run.
 *
 * `getSecret(name)` looks in `<dir>/<name>` (`$SECRETS_DIR`, default
 * `/run/secrets`), then the file named by `<NAME>_FILE`, then `<NAME>`, then
 * Vault KV v2 and AWS Secrets Manager when configured, in the order
 * `$SECRETS_ORDER` gives (default `files,env,vault,aws`). `<NAME>` and
 * `<NAME>_FILE` both set is an error. Trailing `\n` / `\r\n` are trimmed;
 * empty is an error. Values come back as {@link Secret}, which prints as
 * `<redacted>`; errors never hold a value.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { inspect } from "node:util";
import { amzDate, sign } from "./sigv4.js";

export { sign as signV4, amzDate } from "./sigv4.js";

/** Searched first when `$SECRETS_DIR` is unset or empty. */
export const DEFAULT_DIR = "/run/secrets";
/** Secret files larger than this (1 MiB) are refused. */
export const MAX_SECRET_LEN = 1 << 20;
/** Default of `$SECRETS_CACHE_SECONDS`. */
export const DEFAULT_CACHE_SECONDS = 60;
const MAX_BODY = 8 * MAX_SECRET_LEN;
const TIMEOUT_MS = 10_000;

export type ErrorKind =
  | "invalid_name"
  | "conflict"
  | "not_found"
  | "cannot_build"
  | "empty"
  | "not_utf8"
  | "io"
  | "invalid_var"
  | "provider";

/** Why a secret could not be read. Never contains a secret value. */
export class SecretError extends Error {
  override name = "SecretError";
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** The places looked at (`not_found`, `cannot_build`). */
    readonly looked: string[] = [],
    /** The missing parts (`cannot_build`). */
    readonly missing: string[] = [],
  ) {
    super(message);
  }
}

/** Rust's `{:?}` of a plain string, so messages match the other readers. */
function quote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += "\\" + ch;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c === 0) out += "\\0";
    else if (c < 0x20 || c === 0x7f) out += `\\u{${c.toString(16)}}`;
    else out += ch;
  }
  return out + '"';
}

/**
 * A secret value. `toString()`, `toJSON()` and `util.inspect` (so
 * `console.log`) never show it; `expose()` and `exposeString()` do.
 */
export class Secret {
  readonly #bytes: Buffer;
  /** Where the value came from, e.g. `/run/secrets/jwt_secret` or `$JWT_SECRET`. */
  readonly source: string;

  constructor(bytes: Buffer, source: string) {
    this.#bytes = bytes;
    this.source = source;
  }
  /** The bytes. Anything built from them is the caller's to protect. */
  expose(): Buffer {
    return this.#bytes;
  }
  /** The value as UTF-8 text; a `not_utf8` {@link SecretError} when it is not. */
  exposeString(): string {
    try {
      return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(this.#bytes);
    } catch {
      throw new SecretError("not_utf8", `secret from ${this.source} is not valid UTF-8`);
    }
  }
  get length(): number {
    return this.#bytes.length;
  }
  /** First 12 hex characters of the SHA-256 of the bytes (unkeyed: not for guessable values). */
  fingerprint(): string {
    return createHash("sha256").update(this.#bytes).digest("hex").slice(0, 12);
  }
  /** Overwrites the bytes with zeros. */
  wipe(): void {
    this.#bytes.fill(0);
  }
  toString(): string {
    return "<redacted>";
  }
  toJSON(): string {
    return "<redacted>";
  }
  [Symbol.toPrimitive](): string {
    return "<redacted>";
  }
  [inspect.custom](): string {
    return `Secret { source: ${this.source}, value: <redacted> }`;
  }
}

export type Env = Record<string, string | undefined> | ((key: string) => string | undefined);

/** Remote values by store and path, shared by the readers that hold the same cache. */
export class RemoteCache {
  readonly entries = new Map<string, { secret: Secret; fetched: number }>();
  clear(): void {
    for (const e of this.entries.values()) e.secret.wipe();
    this.entries.clear();
  }
}

export interface ReaderOptions {
  /** The secrets directory; default `$SECRETS_DIR`, else `/run/secrets`. */
  dir?: string;
  /** The environment; default `process.env`. */
  env?: Env;
  /** The cache of remote values; default the process-wide one when `env` is not given, else a new one. */
  cache?: RemoteCache;
  /** The HTTP client; default the global `fetch`. */
  fetch?: typeof fetch;
}

type Provider = "files" | "env" | "vault" | "aws";
const PROVIDERS: Provider[] = ["files", "env", "vault", "aws"];
const UNRESERVED = /[A-Za-z0-9\-._~]/;

function validateName(name: string): void {
  let reason: string | undefined;
  if (name === "") reason = "empty";
  else if (name.includes("/")) reason = "contains '/'";
  else if (name.includes("\0")) reason = "contains a NUL byte";
  else if (name.includes("..")) reason = "contains '..'";
  else if (name.includes("=")) reason = "contains '='";
  if (reason !== undefined) throw new SecretError("invalid_name", `invalid secret name ${quote(name)}: ${reason}`);
}

/** `postgres_password` → `POSTGRES_PASSWORD`; `-` and `.` become `_` (ASCII upper-casing only). */
export function envVarName(name: string): string {
  return name.replace(/[-.]/g, "_").replace(/[a-z]/g, (c) => c.toUpperCase());
}

/** Removes trailing `\n` and `\r\n` (repeated), nothing else. */
function trimNewlines(b: Buffer): Buffer {
  let n = b.length;
  while (n > 0 && b[n - 1] === 0x0a) {
    n--;
    if (n > 0 && b[n - 1] === 0x0d) n--;
  }
  return b.subarray(0, n);
}

/** Percent-encodes everything but `A-Za-z0-9-._~`. */
export function percentEncode(b: Buffer | string): string {
  const bytes = typeof b === "string" ? Buffer.from(b, "utf8") : b;
  let out = "";
  for (const byte of bytes) {
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && UNRESERVED.test(ch) ? ch : "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

class IoFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Reads at most MAX_SECRET_LEN bytes; `null` when the file does not exist. */
function readFile(path: string, missingIsNull: boolean): Buffer | null {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (missingIsNull && err.code === "ENOENT") return null;
    throw new IoFailure(err.code ?? "EIO", err.message);
  }
  try {
    const size = (() => {
      try {
        return fstatSync(fd).size;
      } catch {
        return 0;
      }
    })();
    let buf = Buffer.alloc(Math.min(size, MAX_SECRET_LEN) + 1);
    let len = 0;
    for (;;) {
      if (len === buf.length) {
        if (buf.length > MAX_SECRET_LEN) break;
        const bigger = Buffer.alloc(Math.min(buf.length * 2, MAX_SECRET_LEN + 1));
        buf.copy(bigger);
        buf.fill(0);
        buf = bigger;
      }
      const n = readSync(fd, buf, len, buf.length - len, null);
      if (n === 0) break;
      len += n;
    }
    if (len > MAX_SECRET_LEN) {
      buf.fill(0);
      throw new IoFailure("EFBIG", `secret file is larger than ${MAX_SECRET_LEN} bytes`);
    }
    return buf.subarray(0, len);
  } catch (e) {
    if (e instanceof IoFailure) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new IoFailure(err.code ?? "EIO", err.message);
  } finally {
    closeSync(fd);
  }
}

function finish(name: string, bytes: Buffer, source: string): Secret {
  const trimmed = trimNewlines(bytes);
  if (trimmed.length === 0) throw new SecretError("empty", `secret ${quote(name)} from ${source} is empty`);
  return new Secret(trimmed, source);
}

function ioError(name: string, source: string, e: IoFailure): SecretError {
  return new SecretError("io", `cannot read secret ${quote(name)} from ${source}: ${e.message} (${e.code})`);
}

/** Splits `http(s)://authority[/base]`; `null` when it is not such a URL or holds user info. */
function splitUrl(url: string): { scheme: string; authority: string; path: string } | null {
  const i = url.indexOf("://");
  if (i < 0) return null;
  const scheme = url.slice(0, i);
  if (scheme !== "http" && scheme !== "https") return null;
  const rest = url.slice(i + 3);
  const slash = rest.indexOf("/");
  const authority = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? "" : rest.slice(slash).replace(/\/+$/, "");
  if (authority === "" || authority.includes("@")) return null;
  return { scheme, authority, path };
}

/** `text` cut to 200 characters, each of `hide` replaced by `<redacted>`. */
function scrub(text: string, hide: (string | undefined)[]): string {
  let out = Array.from(text).slice(0, 200).join("");
  for (const h of hide) if (h) out = out.split(h).join("<redacted>");
  return out;
}

const trimSlashes = (s: string): string => s.replace(/^\/+|\/+$/g, "");

interface Prepared {
  order: [Provider, boolean][];
  varName: string;
  fileVar: string;
  direct: string | undefined;
  filePath: string | undefined;
}

let sharedCache: RemoteCache | undefined;

/** Looks secrets up in a directory, an environment and the configured stores. */
export class SecretReader {
  readonly dir: string;
  readonly #env: (key: string) => string | undefined;
  readonly #cache: RemoteCache;
  readonly #fetch: typeof fetch;

  constructor(options: ReaderOptions = {}) {
    const env = options.env ?? process.env;
    this.#env = typeof env === "function" ? env : (k) => env[k];
    const dir = options.dir ?? this.#env("SECRETS_DIR");
    this.dir = dir ? dir : DEFAULT_DIR;
    this.#cache = options.cache ?? (options.env === undefined ? (sharedCache ??= new RemoteCache()) : new RemoteCache());
    this.#fetch = options.fetch ?? ((...a) => fetch(...a));
  }

  [inspect.custom](): string {
    return `SecretReader { dir: ${this.dir} }`;
  }

  /** A variable's value; set to the empty string counts as unset. */
  #var(key: string): string | undefined {
    const v = this.#env(key);
    return v === undefined || v === "" ? undefined : v;
  }

  #setting(key: string, trim: (s: string) => string = (s) => s.trim()): string | undefined {
    const v = this.#var(key);
    if (v === undefined) return undefined;
    const t = trim(v);
    return t === "" ? undefined : t;
  }

  #order(): [Provider, boolean][] {
    const raw = this.#var("SECRETS_ORDER");
    if (raw === undefined) return PROVIDERS.map((p) => [p, false]);
    const order: [Provider, boolean][] = [];
    for (const item of raw.split(",")) {
      const p = item.trim() as Provider;
      if (!PROVIDERS.includes(p)) {
        throw new SecretError("invalid_var", "$SECRETS_ORDER must be a comma-separated list of files, env, vault and aws");
      }
      if (order.some(([q]) => q === p)) throw new SecretError("invalid_var", "$SECRETS_ORDER names a provider twice");
      order.push([p, true]);
    }
    return order;
  }

  #prepare(name: string): Prepared {
    validateName(name);
    const order = this.#order();
    const varName = envVarName(name);
    const fileVar = `${varName}_FILE`;
    const direct = this.#var(varName);
    const filePath = this.#var(fileVar);
    if (direct !== undefined && filePath !== undefined) {
      throw new SecretError("conflict", `secret ${quote(name)}: both $${varName} and $${fileVar} are set; set only one`);
    }
    return { order, varName, fileVar, direct, filePath };
  }

  /** The `files` provider: a secret, or `null` after noting the places looked at. */
  #files(name: string, p: Prepared, looked: string[]): Secret | null {
    const dirPath = join(this.dir, name);
    let bytes: Buffer | null;
    try {
      bytes = readFile(dirPath, true);
    } catch (e) {
      throw ioError(name, dirPath, e as IoFailure);
    }
    if (bytes !== null) return finish(name, bytes, dirPath);
    looked.push(dirPath);
    if (p.filePath !== undefined) {
      const source = `$${p.fileVar} (${p.filePath})`;
      try {
        return finish(name, readFile(p.filePath, false)!, source);
      } catch (e) {
        if (e instanceof SecretError) throw e;
        throw ioError(name, source, e as IoFailure);
      }
    }
    looked.push(`$${p.fileVar}`);
    return null;
  }

  #envProvider(name: string, p: Prepared, looked: string[]): Secret | null {
    if (p.direct !== undefined) return finish(name, Buffer.from(p.direct, "utf8"), `$${p.varName}`);
    looked.push(`$${p.varName}`);
    return null;
  }

  /**
   * Reads the secret `name` (e.g. `postgres_password`) from the providers in
   * `$SECRETS_ORDER`. Rejects with a {@link SecretError}.
   */
  async get(name: string): Promise<Secret> {
    const p = this.#prepare(name);
    const looked: string[] = [];
    for (const [provider, explicit] of p.order) {
      let s: Secret | null;
      if (provider === "files") s = this.#files(name, p, looked);
      else if (provider === "env") s = this.#envProvider(name, p, looked);
      else if (provider === "vault") s = await this.#vault(name, explicit, looked);
      else s = await this.#aws(name, explicit, looked);
      if (s !== null) return s;
    }
    throw new SecretError("not_found", `secret ${quote(name)} not found; looked at ${looked.join(", ")}`, looked);
  }

  /**
   * {@link get} without the remote stores, for module start-up code: files and
   * environment only. A store that `get` would ask (configured, or named in
   * `$SECRETS_ORDER`) is an `invalid_var` error rather than skipped.
   */
  getSync(name: string): Secret {
    const p = this.#prepare(name);
    const looked: string[] = [];
    for (const [provider, explicit] of p.order) {
      let s: Secret | null = null;
      if (provider === "files") s = this.#files(name, p, looked);
      else if (provider === "env") s = this.#envProvider(name, p, looked);
      else {
        const prefixVar = provider === "vault" ? "SECRETS_VAULT_PREFIX" : "SECRETS_AWS_PREFIX";
        if (explicit || this.#var(prefixVar) !== undefined) {
          throw new SecretError(
            "invalid_var",
            `$${prefixVar} is set or $SECRETS_ORDER names ${provider}: the ${provider} store is read by the async getSecret(), not getSecretSync()`,
          );
        }
      }
      if (s !== null) return s;
    }
    throw new SecretError("not_found", `secret ${quote(name)} not found; looked at ${looked.join(", ")}`, looked);
  }

  #plain(key: string, dflt: string): string {
    return this.#var(key) ?? dflt;
  }

  #number(key: string, dflt: string, min: number, max: number, reason: string): string {
    const raw = this.#plain(key, dflt).trim();
    const m = /^\+?([0-9]+)$/.exec(raw);
    const n = m ? Number(BigInt(m[1]!) > 0xffffffffn ? -1 : BigInt(m[1]!)) : -1;
    if (n < min || n > max) throw new SecretError("invalid_var", `$${key} ${reason}`);
    return String(n);
  }

  /** The `database_url` secret when found, else `postgresql://user:password@host:port/db` built from its parts. */
  async databaseUrl(): Promise<Secret> {
    const whole = await settle(() => this.get("database_url"));
    if ("ok" in whole) return whole.ok;
    const looked = notFoundLooked(whole.err);
    const missing: string[] = [];
    const user = partOf("postgres_user", await settle(() => this.get("postgres_user")), missing, looked);
    const password = partOf("postgres_password", await settle(() => this.get("postgres_password")), missing, looked);
    return this.#databaseUrlFrom(user, password, missing, looked);
  }
  /** {@link databaseUrl} from files and environment only. */
  databaseUrlSync(): Secret {
    const whole = settleSync(() => this.getSync("database_url"));
    if ("ok" in whole) return whole.ok;
    const looked = notFoundLooked(whole.err);
    const missing: string[] = [];
    const user = partOf("postgres_user", settleSync(() => this.getSync("postgres_user")), missing, looked);
    const password = partOf("postgres_password", settleSync(() => this.getSync("postgres_password")), missing, looked);
    return this.#databaseUrlFrom(user, password, missing, looked);
  }
  /** The `redis_url` secret when found, else `redis://:password@host:port/db` built from `redis_password`. */
  async redisUrl(): Promise<Secret> {
    const whole = await settle(() => this.get("redis_url"));
    if ("ok" in whole) return whole.ok;
    const looked = notFoundLooked(whole.err);
    const missing: string[] = [];
    const password = partOf("redis_password", await settle(() => this.get("redis_password")), missing, looked);
    return this.#redisUrlFrom(password, missing, looked);
  }
  /** {@link redisUrl} from files and environment only. */
  redisUrlSync(): Secret {
    const whole = settleSync(() => this.getSync("redis_url"));
    if ("ok" in whole) return whole.ok;
    const looked = notFoundLooked(whole.err);
    const missing: string[] = [];
    const password = partOf("redis_password", settleSync(() => this.getSync("redis_password")), missing, looked);
    return this.#redisUrlFrom(password, missing, looked);
  }

  #databaseUrlFrom(user: Secret | null, password: Secret | null, missing: string[], looked: string[]): Secret {
    if (user === null || password === null) throw cannotBuild("database_url", missing, looked);
    const host = this.#plain("POSTGRES_HOST", "postgres");
    const port = this.#number("POSTGRES_PORT", "5432", 1, 65535, PORT_REASON);
    const db = this.#var("POSTGRES_DB");
    const dbBytes = db === undefined ? user.expose() : Buffer.from(db, "utf8");
    const url =
      `postgresql://${percentEncode(user.expose())}:${percentEncode(password.expose())}` +
      `@${host}:${port}/${percentEncode(dbBytes)}`;
    return new Secret(Buffer.from(url, "utf8"), "built from postgres_user, postgres_password");
  }

  #redisUrlFrom(password: Secret | null, missing: string[], looked: string[]): Secret {
    if (password === null) throw cannotBuild("redis_url", missing, looked);
    const host = this.#plain("REDIS_HOST", "redis");
    const port = this.#number("REDIS_PORT", "6379", 1, 65535, PORT_REASON);
    const db = this.#number("REDIS_DB", "0", 0, 0xffffffff, "is not a database number");
    const url = `redis://:${percentEncode(password.expose())}@${host}:${port}/${db}`;
    return new Secret(Buffer.from(url, "utf8"), "built from redis_password");
  }

  // ---- remote stores ----

  #cacheTtlMs(): number {
    return Number(this.#number("SECRETS_CACHE_SECONDS", String(DEFAULT_CACHE_SECONDS), 0, 0xffffffff, "is not a number of seconds")) * 1000;
  }

  async #cachedOrFetch(key: string, fetchIt: () => Promise<Secret | null>): Promise<Secret | null> {
    const ttl = this.#cacheTtlMs();
    const hit = this.#cache.entries.get(key);
    if (hit !== undefined) {
      if (performance.now() - hit.fetched < ttl) return new Secret(Buffer.from(hit.secret.expose()), hit.secret.source);
      hit.secret.wipe();
      this.#cache.entries.delete(key);
    }
    const got = await fetchIt();
    if (got !== null && ttl > 0) {
      this.#cache.entries.set(key, { secret: new Secret(Buffer.from(got.expose()), got.source), fetched: performance.now() });
    }
    return got;
  }

  async #request(url: string, init: RequestInit, fail: (r: string) => SecretError): Promise<{ status: number; body: Buffer }> {
    let res: Response;
    try {
      res = await this.#fetch(url, { ...init, redirect: "manual", signal: AbortSignal.timeout(TIMEOUT_MS) });
    } catch (e) {
      const err = e as Error & { cause?: { code?: string; message?: string } };
      throw fail(`request failed: ${err.cause?.code ?? err.cause?.message ?? err.message}`);
    }
    const chunks: Buffer[] = [];
    let len = 0;
    try {
      if (res.body) {
        for await (const chunk of res.body) {
          len += chunk.length;
          if (len > MAX_BODY) throw new Error(`the body is larger than ${MAX_BODY} bytes`);
          chunks.push(Buffer.from(chunk));
        }
      }
    } catch (e) {
      for (const c of chunks) c.fill(0);
      throw fail(`HTTP ${res.status}, reading the body failed: ${(e as Error).message}`);
    }
    const body = Buffer.concat(chunks);
    for (const c of chunks) c.fill(0);
    return { status: res.status, body };
  }

  async #vault(name: string, explicit: boolean, looked: string[]): Promise<Secret | null> {
    const setting = (k: string) => this.#setting(k, (s) => trimSlashes(s.trim()));
    const prefix = setting("SECRETS_VAULT_PREFIX");
    if (prefix === undefined) {
      if (explicit) throw new SecretError("invalid_var", "$SECRETS_VAULT_PREFIX must be set when $SECRETS_ORDER names vault");
      return null;
    }
    const rawAddr = this.#var("VAULT_ADDR");
    if (rawAddr === undefined) throw new SecretError("invalid_var", "$VAULT_ADDR must be set when $SECRETS_VAULT_PREFIX is");
    const addr = rawAddr.trim().replace(/\/+$/, "");
    if (splitUrl(addr) === null) throw new SecretError("invalid_var", "$VAULT_ADDR is not an http:// or https:// URL");
    const mount = setting("SECRETS_VAULT_MOUNT") ?? "secret";
    const namespace = setting("VAULT_NAMESPACE");
    const path = `${mount}/data/${prefix}/${name}`;
    const source = `vault ${path} at ${addr}`;
    looked.push(source);
    const fail = (reason: string) => new SecretError("provider", `cannot read secret ${quote(name)} from ${source}: ${reason}`);
    return this.#cachedOrFetch(`vault ${addr} ${namespace ?? ""} ${path}`, async () => {
      const token = this.#vaultToken(fail);
      const url = `${addr}/v1/${path.split("/").map((s) => percentEncode(s)).join("/")}`;
      const headers: Record<string, string> = { "X-Vault-Token": token, "X-Vault-Request": "true", "User-Agent": "secrets-reader" };
      if (namespace !== undefined) headers["X-Vault-Namespace"] = namespace;
      const { status, body } = await this.#request(url, { method: "GET", headers }, fail);
      const json = parseJson(body);
      body.fill(0);
      if (status === 404) return null;
      if (status !== 200) {
        const errors = isObject(json) && Array.isArray(json.errors) ? json.errors.filter((e): e is string => typeof e === "string").join("; ") : "";
        const text = scrub(errors, [token]);
        throw fail(text === "" ? `HTTP ${status}` : `HTTP ${status}: ${text}`);
      }
      if (json === undefined) throw fail("the response is not JSON");
      const data = isObject(json) && isObject(json.data) ? json.data.data : undefined;
      if (!isObject(data)) throw fail("the response has no data.data (is the mount KV version 2?)");
      const value = data[name];
      if (value === undefined) throw fail(`the entry has no key ${quote(name)} (keys: ${Object.keys(data).sort().join(", ")})`);
      if (typeof value !== "string") throw fail(`the entry's key ${quote(name)} is not a string`);
      return finish(name, Buffer.from(value, "utf8"), source);
    });
  }

  #vaultToken(fail: (r: string) => SecretError): string {
    const direct = this.#var("VAULT_TOKEN");
    const file = this.#var("VAULT_TOKEN_FILE");
    let token: Buffer;
    if (direct !== undefined && file !== undefined) {
      throw new SecretError("invalid_var", "$VAULT_TOKEN_FILE and $VAULT_TOKEN are both set; set only one");
    } else if (direct !== undefined) {
      token = Buffer.from(direct, "utf8");
    } else if (file !== undefined) {
      try {
        token = readFile(file, false)!;
      } catch (e) {
        throw ioError("vault token", `$VAULT_TOKEN_FILE (${file})`, e as IoFailure);
      }
    } else {
      throw fail("no token: set $VAULT_TOKEN or $VAULT_TOKEN_FILE");
    }
    return trimNewlines(token).toString("utf8");
  }

  async #aws(name: string, explicit: boolean, looked: string[]): Promise<Secret | null> {
    const prefix = this.#setting("SECRETS_AWS_PREFIX");
    if (prefix === undefined) {
      if (explicit) throw new SecretError("invalid_var", "$SECRETS_AWS_PREFIX must be set when $SECRETS_ORDER names aws");
      return null;
    }
    const region = this.#setting("AWS_REGION") ?? this.#setting("AWS_DEFAULT_REGION");
    if (region === undefined) {
      throw new SecretError("invalid_var", "$AWS_REGION (or $AWS_DEFAULT_REGION) must be set when $SECRETS_AWS_PREFIX is");
    }
    let endpointVar = "AWS_ENDPOINT_URL_SECRETS_MANAGER";
    let endpoint = this.#setting(endpointVar);
    if (endpoint === undefined) {
      endpointVar = "AWS_ENDPOINT_URL";
      endpoint = this.#setting(endpointVar);
    }
    if (endpoint === undefined) {
      endpointVar = "";
      endpoint = `https://secretsmanager.${region}.amazonaws.com`;
    }
    endpoint = endpoint.replace(/\/+$/, "");
    if (splitUrl(endpoint) === null) throw new SecretError("invalid_var", `$${endpointVar} is not an http:// or https:// URL`);
    const id = `${prefix.replace(/\/+$/, "")}/${name}`;
    const source = `aws secretsmanager ${id} in ${region}`;
    looked.push(source);
    const fail = (reason: string) => new SecretError("provider", `cannot read secret ${quote(name)} from ${source}: ${reason}`);
    const ep = endpoint;
    return this.#cachedOrFetch(`aws ${ep} ${region} ${id}`, async () => {
      const creds = this.#awsCredentials(fail);
      const url = new URL(`${ep}/`);
      const body = JSON.stringify({ SecretId: id });
      const headers: Record<string, string> = {
        "content-type": "application/x-amz-json-1.1",
        host: url.host,
        "x-amz-target": "secretsmanager.GetSecretValue",
      };
      const signed = sign({
        accessKey: creds.accessKey,
        secretKey: creds.secretKey,
        sessionToken: creds.sessionToken,
        region,
        service: "secretsmanager",
        amzDate: amzDate(new Date()),
        method: "POST",
        path: url.pathname,
        headers,
        body,
      });
      const sent: Record<string, string> = { ...headers, ...signed.headers, "user-agent": "secrets-reader" };
      delete sent.host; // fetch sets it from the URL, as signed
      const { status, body: answer } = await this.#request(url.href, { method: "POST", headers: sent, body }, fail);
      const json = parseJson(answer);
      answer.fill(0);
      if (status !== 200) {
        const field = (k: string) => (isObject(json) && typeof json[k] === "string" ? (json[k] as string) : undefined);
        const kind = (field("__type") ?? "").split("#").pop() ?? "";
        if (kind === "ResourceNotFoundException") return null;
        const message = field("message") ?? field("Message");
        const text = scrub(message === undefined ? kind : `${kind}: ${message}`, [creds.secretKey, creds.sessionToken]);
        throw fail(text === "" ? `HTTP ${status}` : `HTTP ${status}: ${text}`);
      }
      if (json === undefined) throw fail("the response is not JSON");
      if (isObject(json) && typeof json.SecretString === "string") {
        return finish(name, Buffer.from(json.SecretString, "utf8"), source);
      }
      if (isObject(json) && typeof json.SecretBinary === "string") {
        const b64 = json.SecretBinary;
        if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(b64)) {
          throw fail("SecretBinary is not valid base64");
        }
        return finish(name, Buffer.from(b64, "base64"), source);
      }
      throw fail("the response has neither SecretString nor SecretBinary");
    });
  }

  #awsCredentials(fail: (r: string) => SecretError): { accessKey: string; secretKey: string; sessionToken?: string } {
    const keyId = this.#setting("AWS_ACCESS_KEY_ID");
    const secret = this.#var("AWS_SECRET_ACCESS_KEY");
    if (keyId !== undefined && secret !== undefined) {
      return { accessKey: keyId, secretKey: secret, sessionToken: this.#var("AWS_SESSION_TOKEN") };
    }
    if (keyId !== undefined || secret !== undefined) {
      throw fail("set both $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or neither");
    }
    let path = this.#var("AWS_SHARED_CREDENTIALS_FILE");
    if (path === undefined) {
      const home = this.#var("HOME");
      if (home === undefined) throw fail(NO_CREDENTIALS);
      path = join(home, ".aws/credentials");
    }
    const profile = this.#setting("AWS_PROFILE") ?? "default";
    let text: Buffer | null;
    try {
      text = readFile(path, true);
    } catch (e) {
      throw fail(`cannot read the credentials file ${path}: ${(e as Error).message}`);
    }
    if (text === null) throw fail(NO_CREDENTIALS);
    const keys = profileKeys(text.toString("utf8"), profile);
    text.fill(0);
    if (keys.accessKey === undefined || keys.secretKey === undefined) {
      throw fail(`profile [${profile}] of ${path} has no aws_access_key_id and aws_secret_access_key`);
    }
    return { accessKey: keys.accessKey, secretKey: keys.secretKey, sessionToken: keys.sessionToken };
  }
}

const PORT_REASON = "is not a port number (1-65535)";
const NO_CREDENTIALS =
  "no credentials: set $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY (and $AWS_SESSION_TOKEN) or $AWS_SHARED_CREDENTIALS_FILE";

/** The keys of `[profile]` in an INI-style AWS credentials file. */
export function profileKeys(text: string, profile: string): { accessKey?: string; secretKey?: string; sessionToken?: string } {
  let section: string | undefined;
  const out: { accessKey?: string; secretKey?: string; sessionToken?: string } = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    if (line.startsWith("[") && line.endsWith("]")) {
      section = line.slice(1, -1).trim();
      continue;
    }
    if (section !== profile) continue;
    const eq = line.indexOf("=");
    if (eq < 0) continue;
    const k = line.slice(0, eq).trim();
    const v = line.slice(eq + 1).trim();
    if (k === "aws_access_key_id") out.accessKey = v;
    else if (k === "aws_secret_access_key") out.secretKey = v;
    else if (k === "aws_session_token") out.sessionToken = v;
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body)) as unknown;
  } catch {
    return undefined;
  }
}

type Settled = { ok: Secret } | { err: unknown };
async function settle(f: () => Promise<Secret>): Promise<Settled> {
  try {
    return { ok: await f() };
  } catch (err) {
    return { err };
  }
}
function settleSync(f: () => Secret): Settled {
  try {
    return { ok: f() };
  } catch (err) {
    return { err };
  }
}

/** The places looked at when a whole URL secret was not found; any other error is thrown. */
function notFoundLooked(err: unknown): string[] {
  if (err instanceof SecretError && err.kind === "not_found") return [...err.looked];
  throw err;
}

function partOf(name: string, got: Settled, missing: string[], looked: string[]): Secret | null {
  if ("ok" in got) return got.ok;
  if (got.err instanceof SecretError && got.err.kind === "not_found") {
    missing.push(name);
    looked.push(...got.err.looked);
    return null;
  }
  throw got.err;
}

function cannotBuild(name: string, missing: string[], looked: string[]): SecretError {
  return new SecretError(
    "cannot_build",
    `secret ${quote(name)} not found and cannot be built: missing ${missing.join(", ")}; looked at ${looked.join(", ")}`,
    looked,
    missing,
  );
}

let defaultReader: SecretReader | undefined;
const reader = (options?: ReaderOptions): SecretReader =>
  options === undefined ? (defaultReader ??= new SecretReader()) : new SecretReader(options);

/** Reads the secret `name`: `/run/secrets/<name>`, `$<NAME>_FILE`, `$<NAME>`, then the configured stores. */
export function getSecret(name: string, options?: ReaderOptions): Promise<Secret> {
  return reader(options).get(name);
}
/** The `database_url` secret, else built from `postgres_user` and `postgres_password`. */
export function getDatabaseUrl(options?: ReaderOptions): Promise<Secret> {
  return reader(options).databaseUrl();
}
/** The `redis_url` secret, else built from `redis_password`. */
export function getRedisUrl(options?: ReaderOptions): Promise<Secret> {
  return reader(options).redisUrl();
}
/** {@link getSecret} from files and environment only, synchronously. */
export function getSecretSync(name: string, options?: ReaderOptions): Secret {
  return reader(options).getSync(name);
}
/** {@link getDatabaseUrl} from files and environment only, synchronously. */
export function getDatabaseUrlSync(options?: ReaderOptions): Secret {
  return reader(options).databaseUrlSync();
}
/** {@link getRedisUrl} from files and environment only, synchronously. */
export function getRedisUrlSync(options?: ReaderOptions): Secret {
  return reader(options).redisUrlSync();
}
