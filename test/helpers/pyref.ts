// Running a PyTorch reference script (test/py/*.py, Debian's /usr/bin/python3 with torch) on
// tensors exchanged through safetensors files.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, type Tensor } from '../../src/engine/index.js';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import type { RawTensor } from '../../src/io/raw.js';

export const PYTHON = '/usr/bin/python3';
export const PY_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/py');

let torchOk: boolean | null = null;
export function hasTorch(): boolean {
  torchOk ??= spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
  return torchOk;
}

/** Runs test/py/<script> in.safetensors out.safetensors ...args; null when torch is unavailable. */
export function runPyRef(script: string, tensors: Map<string, RawTensor>, args: string[] = []): Map<string, RawTensor> | null {
  if (!hasTorch()) return null;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-ref-'));
  try {
    const inp = path.join(dir, 'in.safetensors');
    const out = path.join(dir, 'out.safetensors');
    writeSafetensors(inp, tensors);
    const r = spawnSync(PYTHON, [path.join(PY_DIR, script), inp, out, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return readSafetensors(out).tensors;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export { toRaw as raw, fromRaw } from '../../src/adapters/io.js';
export const maxRelErr = (a: Tensor, b: Tensor): number => tidy(() => a.sub(b).abs().max().item() / Math.max(b.abs().max().item(), 1e-30));
