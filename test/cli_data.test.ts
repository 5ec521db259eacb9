// `naslora data validate`: exit status and messages on the shared datasets and on broken ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const here = path.dirname(fileURLToPath(import.meta.url)); // dist/test
const CLI = path.resolve(here, '../src/cli/main.js');
const DATA = path.resolve(here, '../../../shared/data');

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'data', 'validate', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function png(file: string, w: number, h: number, value: number): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const px = Buffer.alloc(w * h, 0);
  px.fill(value, 0, Math.floor(px.length / 2)); // top half foreground
  await sharp(px, { raw: { width: w, height: h, channels: 1 } }).png().toFile(file);
}

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-cli-data-'));
  try { await fn(dir); } finally { fs.rmSync(dir, { recursive: true, force: true }); }
}

test('ph2: clean, exit 0', { skip: !fs.existsSync(path.join(DATA, 'ph2')) && 'shared/data/ph2 is not there' }, () => {
  const r = cli(path.join(DATA, 'ph2'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /20 pairs, 20 valid, 0 error\(s\)/);
});

test('kvasir-seg: JPEG masks give a non-binary warning, exit 0; --json prints the report', { skip: !fs.existsSync(path.join(DATA, 'kvasir-seg')) && 'shared/data/kvasir-seg is not there' }, () => {
  const r = cli(path.join(DATA, 'kvasir-seg'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /0 error\(s\), 1 warning\(s\)/);
  assert.match(r.stdout, /WARNING \[non-binary-mask\].*not strictly binary/);
  const j = cli(path.join(DATA, 'kvasir-seg'), '--json', '--threshold', '100');
  assert.equal(j.status, 0, j.stderr);
  const rep = JSON.parse(j.stdout) as { ok: boolean; samples: number; issues: Array<{ code: string; message: string }> };
  assert.equal(rep.ok, true);
  assert.equal(rep.samples, 200);
  assert.deepEqual(rep.issues.map((i) => i.code), ['non-binary-mask']);
  assert.match(rep.issues[0]!.message, /gray > 100/);
});

test('missing partner: exit 1 with the missing-mask / missing-image messages', () => withTmp(async (d) => {
  await png(path.join(d, 'images/a.png'), 8, 8, 200);
  await png(path.join(d, 'masks/a.png'), 8, 8, 255);
  await png(path.join(d, 'images/b.png'), 8, 8, 200);
  await png(path.join(d, 'masks/c.png'), 8, 8, 255);
  const r = cli(d);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /ERROR \[missing-mask\] b: image .*b\.png has no mask/);
  assert.match(r.stdout, /ERROR \[missing-image\] c: mask .*c\.png has no image/);
  assert.equal(JSON.parse(cli(d, '--json').stdout).ok, false);
}));

test('size mismatch: exit 1 with both sizes in the message', () => withTmp(async (d) => {
  await png(path.join(d, 'images/a.png'), 8, 8, 200);
  await png(path.join(d, 'masks/a.png'), 8, 6, 255);
  const r = cli(d);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /ERROR \[size-mismatch\] a: image is 8x8 but mask is 8x6/);
}));

test('missing folder and bad --threshold: exit 1 with a clear message', () => {
  const gone = path.join(os.tmpdir(), 'naslora-no-such-dataset-3141');
  const r = cli(gone);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no such folder or file \(expected a folder with images\/ and masks\/, or a \.csv file\)/);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/); // no stack trace
  const t = cli(path.join(DATA, 'ph2'), '--threshold', '300');
  assert.notEqual(t.status, 0);
  assert.match(t.stderr, /--threshold.*invalid.*0\.\.254/);
});
