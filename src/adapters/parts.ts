// Which part of an adapted SAM a parameter belongs to, by its state-dict name. Trainability is
// set per part, and reports count parameters per part.
import type { Module } from '../engine/index.js';

export const PARTS = ['lora', 'ops', 'alpha', 'decoder', 'iou_head', 'prompt_encoder', 'encoder'] as const;
export type Part = (typeof PARTS)[number];

export function partOf(name: string): Part {
  if (/\.cell\.alpha$/.test(name)) return 'alpha';
  if (/\.lora_[AB]\.weight$/.test(name)) return 'lora';
  if (/\.(cell\.ops|moe)\./.test(name)) return 'ops';
  if (/^mask_decoder\.iou_prediction_head\./.test(name)) return 'iou_head';
  if (/^mask_decoder\./.test(name)) return 'decoder';
  if (/^prompt_encoder\./.test(name)) return 'prompt_encoder';
  return 'encoder';
}

/** Sets requiresGrad for every parameter: on exactly for the given parts. */
export function setTrainable(model: Module, parts: Iterable<Part>): void {
  const on = new Set(parts);
  for (const [n, p] of model.namedParameters()) p.requiresGrad = on.has(partOf(n));
}

export interface PartCount { part: Part; trainable: number; total: number }

/** Parameter counts per part (trainable and total). */
export function countByPart(model: Module): PartCount[] {
  const m = new Map<Part, PartCount>(PARTS.map((p) => [p, { part: p, trainable: 0, total: 0 }]));
  for (const [n, p] of model.namedParameters()) {
    const c = m.get(partOf(n))!;
    c.total += p.numel;
    if (p.requiresGrad) c.trainable += p.numel;
  }
  return [...m.values()].filter((c) => c.total > 0);
}

export function formatCounts(counts: PartCount[]): string {
  const total = counts.reduce((s, c) => s + c.trainable, 0);
  const lines = counts.map((c) => `  ${c.part.padEnd(15)} ${String(c.trainable).padStart(12)} trainable of ${c.total}`);
  return [...lines, `  ${'total'.padEnd(15)} ${String(total).padStart(12)} trainable`].join('\n');
}
