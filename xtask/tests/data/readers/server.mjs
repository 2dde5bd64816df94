// The TypeScript reader's live service for xtask/tests/it/compose_e2e.rs, run as
// `node server.mjs PORT NAME...` with the package installed under
// node_modules/@raqeem/secrets-reader. `GET /health` answers `ok`; any other
// GET reads every NAME through the package's public API (a fresh read per
// request) and answers one line per secret, `NAME LENGTH SHA256 SOURCE`
// (tab-separated): a digest of the bytes read, never the value.
// `database_url` and `redis_url` go through getDatabaseUrl() and getRedisUrl().
import { createServer } from "node:http";
import { createHash } from "node:crypto";
import { getDatabaseUrl, getRedisUrl, getSecret } from "@raqeem/secrets-reader";

const [port, ...names] = process.argv.slice(2);

async function line(name) {
  try {
    const secret =
      name === "database_url" ? await getDatabaseUrl()
      : name === "redis_url" ? await getRedisUrl()
      : await getSecret(name);
    const bytes = secret.expose();
    const sha = createHash("sha256").update(bytes).digest("hex");
    return { ok: true, text: `${name}\t${bytes.length}\t${sha}\t${secret.source}\n` };
  } catch (e) {
    // The reader's errors never hold a value.
    return { ok: false, text: `${name}\terror: ${e instanceof Error ? e.message : String(e)}\n` };
  }
}

createServer(async (req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    return;
  }
  const lines = await Promise.all(names.map(line));
  const failed = lines.filter((l) => !l.ok);
  const body = (failed.length ? failed : lines).map((l) => l.text).join("");
  res.writeHead(failed.length ? 500 : 200, { "content-type": "text/plain" }).end(body);
}).listen(Number(port), "0.0.0.0", () => {
  console.error(`node ${process.version}: serving ${names.length} secrets on :${port}`);
});
