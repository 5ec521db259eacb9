// Byte-exact comparison of tensor collections (checkpoint round trips).
import assert from 'node:assert/strict';
import type { RawTensor } from '../../src/io/raw.js';

export function assertSameTensors(a: Map<string, RawTensor>, b: Map<string, RawTensor>): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k)!;
    assert.equal(t.dtype, u.dtype, k);
    assert.deepEqual(t.shape, u.shape, k);
    assert.ok(Buffer.from(t.data).equals(Buffer.from(u.data)), `bytes of ${k} differ`);
  }
}
