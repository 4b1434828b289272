// Fills standalone.html the way the daemon's `html` export does: flamegraph.js inlined at one
// placeholder, the profile JSON (with "<" escaped) at the other.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './browser.mjs';

const UI_DIR = path.join(REPO_ROOT, 'daemon', 'ui');

export function fillStandalone(profile) {
  const page = readFileSync(path.join(UI_DIR, 'standalone.html'), 'utf8');
  const script = readFileSync(path.join(UI_DIR, 'flamegraph.js'), 'utf8');
  const json = JSON.stringify(profile).replace(/</g, '\\u003c');
  // Function replacements: "$" in either text must stay literal.
  return page.replace('/*KILN_FLAMEGRAPH_JS*/', () => script).replace('/*KILN_DATA*/', () => json);
}
