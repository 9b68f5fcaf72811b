// Parses an AsyncAPI document with the official parser (@asyncapi/parser) and fails on any
// error-severity diagnostic. The Python side generates the document; only the reference
// implementation can say whether AsyncAPI tooling will accept it.
//
// Usage: node tools/asyncapi/validate.mjs [asyncapi.yaml]
// Exit: 0 valid (warnings are printed, not fatal), 1 invalid, 2 unusable (no file, bad arguments).

import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DiagnosticSeverity, Parser } from '@asyncapi/parser';

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

function describe(diagnostic) {
  const where = diagnostic.path?.length ? diagnostic.path.join('.') : '<document>';
  // Spectral counts lines from 0; editors count from 1.
  const line = diagnostic.range ? `:${diagnostic.range.start.line + 1}` : '';
  const severity = SEVERITY[diagnostic.severity] ?? String(diagnostic.severity);
  return `${severity} ${diagnostic.code} at ${where}${line}: ${diagnostic.message}`;
}

async function main(args) {
  if (args.length > 1) {
    console.error('usage: node tools/asyncapi/validate.mjs [asyncapi.yaml]');
    return 2;
  }
  const file = resolve(args[0] ?? 'asyncapi.yaml');
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    console.error(`cannot read ${file}: ${error.message}`);
    return 2;
  }
  const { document, diagnostics } = await new Parser().parse(text, { source: file });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  for (const diagnostic of diagnostics) {
    const out = diagnostic.severity === DiagnosticSeverity.Error ? console.error : console.log;
    out(describe(diagnostic));
  }
  if (errors.length > 0 || document === undefined) {
    console.error(`${file}: INVALID, ${errors.length} error(s)`);
    return 1;
  }
  console.log(
    `${file}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
      `${document.operations().length} operations, ${document.components().messages().length} messages ` +
      `(${diagnostics.length} non-error diagnostic(s))`,
  );
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
