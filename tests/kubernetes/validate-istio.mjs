// Validates Istio resources against Istio's published schemas (npm @kubernetes-models/istio).
// Reads a JSON array of resources on stdin; prints one line per resource, `ok <kind>/<name>`
// or `invalid <kind>/<name>: <why>`, and exits 1 if any is invalid or of an unknown kind.
// SWITCHYARD_NPM: the directory whose node_modules holds the package.
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";

const root = join(process.env.SWITCHYARD_NPM ?? ".", "node_modules", "@kubernetes-models", "istio");
const docs = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const doc of docs) {
  const [group, version] = String(doc.apiVersion).split("/");
  const what = `${doc.kind}/${doc.metadata?.name}`;
  let Kind;
  try {
    Kind = (await import(pathToFileURL(join(root, group, version, `${doc.kind}.js`)).href))[doc.kind];
  } catch (e) {
    console.log(`invalid ${what}: no schema for ${doc.apiVersion} ${doc.kind} (${e.message})`);
    failed = true;
    continue;
  }
  try {
    new Kind(doc).validate();
    console.log(`ok ${what}`);
  } catch (e) {
    console.log(`invalid ${what}: ${e.message.replace(/\s+/g, " ")}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
