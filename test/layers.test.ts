// The folder layout is the architecture: imports flow one way,
// engine → io → model → adapters → data → eval → train → compare → report → serve → cli.
// A module may import its own layer or a lower one, never a higher one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');
const LAYERS = ['engine', 'io', 'model', 'adapters', 'data', 'eval', 'train', 'compare', 'report', 'serve', 'cli'];

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

const layerOf = (file: string) => path.relative(SRC, file).split(path.sep)[0]!;

test('every src folder is a known layer', () => {
  const dirs = fs.readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  assert.deepEqual(dirs.filter((d) => !LAYERS.includes(d)), []);
});

test('imports flow one way through the layers', () => {
  const bad: string[] = [];
  let count = 0;
  for (const f of files(SRC)) {
    const from = LAYERS.indexOf(layerOf(f));
    for (const m of fs.readFileSync(f, 'utf8').matchAll(/^\s*(?:import|export)[^'";]*?from\s+['"](\.[^'"]+)['"]/gm)) {
      const target = path.resolve(path.dirname(f), m[1]!);
      const to = LAYERS.indexOf(layerOf(target));
      count++;
      if (to > from) bad.push(`${path.relative(SRC, f)} imports ${m[1]} (${LAYERS[from]} → ${LAYERS[to]})`);
    }
  }
  assert.ok(count > 100, `found only ${count} relative imports: the scan is broken`);
  assert.deepEqual(bad, []);
});
