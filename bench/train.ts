// Placeholder until the suite lands.
import type { BenchRow } from './common.js';
export async function benchTrain(): Promise<BenchRow[]> {
  throw new Error('bench train is not implemented yet');
}
