import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** readers/conformance/, from dist/test/ (compiled) as from test/. */
export const CONFORMANCE = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "conformance");
