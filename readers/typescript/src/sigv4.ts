/**
 * AWS Signature Version 4 for one request, with Node's crypto only. Pinned
 * to AWS's published test vector `post-vanilla` (readers/conformance/sigv4.json)
 * by test/sigv4.test.ts. Enough for Secrets Manager's JSON API: a `POST /`
 * without a query string, every given header signed.
 */
import { createHash, createHmac } from "node:crypto";

export interface SigningInput {
  accessKey: string;
  secretKey: string;
  sessionToken?: string;
  region: string;
  service: string;
  /** `YYYYMMDDTHHMMSSZ` */
  amzDate: string;
  method: string;
  /** The absolute path, already URI-encoded; no query string. */
  path: string;
  /** Lower-case names; `host` must be among them. */
  headers: Record<string, string>;
  body: string | Uint8Array;
}

export interface Signed {
  canonicalRequest: string;
  stringToSign: string;
  /** The headers to add: `x-amz-date`, `authorization`, and with a session token `x-amz-security-token`. */
  headers: Record<string, string>;
}

const sha256hex = (data: string | Uint8Array): string => createHash("sha256").update(data).digest("hex");
const hmac = (key: string | Uint8Array, data: string): Buffer => createHmac("sha256", key).update(data, "utf8").digest();

/** `Date` to SigV4's `YYYYMMDDTHHMMSSZ`. */
export function amzDate(d: Date): string {
  return d.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

export function sign(input: SigningInput): Signed {
  const added: Record<string, string> = { "x-amz-date": input.amzDate };
  if (input.sessionToken !== undefined) added["x-amz-security-token"] = input.sessionToken;
  const all: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...input.headers, ...added })) {
    all[k.toLowerCase()] = v.trim().replace(/\s+/g, " ");
  }
  const names = Object.keys(all).sort();
  const signedHeaders = names.join(";");
  const canonicalRequest = [
    input.method,
    input.path,
    "",
    names.map((n) => `${n}:${all[n]}`).join("\n") + "\n",
    signedHeaders,
    sha256hex(input.body),
  ].join("\n");
  const date = input.amzDate.slice(0, 8);
  const scope = `${date}/${input.region}/${input.service}/aws4_request`;
  const stringToSign = ["AWS4-HMAC-SHA256", input.amzDate, scope, sha256hex(canonicalRequest)].join("\n");
  const kDate = hmac(`AWS4${input.secretKey}`, date);
  const kRegion = hmac(kDate, input.region);
  const kService = hmac(kRegion, input.service);
  const kSigning = hmac(kService, "aws4_request");
  const signature = createHmac("sha256", kSigning).update(stringToSign, "utf8").digest("hex");
  for (const k of [kDate, kRegion, kService, kSigning]) k.fill(0);
  return {
    canonicalRequest,
    stringToSign,
    headers: {
      ...added,
      authorization: `AWS4-HMAC-SHA256 Credential=${input.accessKey}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`,
    },
  };
}
