// Placeholder until the suite lands.
import type { BenchRow } from './common.js';
export async function benchSam(): Promise<BenchRow[]> {
  throw new Error('bench sam is not implemented yet');
}
