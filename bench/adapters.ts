// Placeholder until the suite lands.
import type { BenchRow } from './common.js';
export async function benchAdapters(): Promise<BenchRow[]> {
  throw new Error('bench adapters is not implemented yet');
}
