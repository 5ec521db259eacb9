// Vega-Lite specs for the report's charts: plain JSON, so a reader can paste any of them into the
// Vega editor, and the page renders them with vega-embed. Ops have fixed colours across every chart.
import type { AlphaRow, EvalEvent, StageEvent, StepEvent } from './load.js';

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

const OP_COLOURS: Record<string, string> = {
  skip: '#7f7f7f', conv_1x1: '#1f77b4', conv_3x3: '#ff7f0e', conv_5x5: '#2ca02c', dil_conv_3x3: '#d62728',
  dil_conv_5x5: '#9467bd', avg_pool_3x3: '#8c564b', max_pool_3x3: '#e377c2',
};
const SPARE = ['#bcbd22', '#17becf', '#393b79', '#637939', '#8c6d31', '#843c39'];

/** The op colour scale: known ops in their fixed colours, others after them. */
export function opScale(ops: readonly string[]): { domain: string[]; range: string[] } {
  let spare = 0;
  return { domain: [...ops], range: ops.map((o) => OP_COLOURS[o] ?? SPARE[spare++ % SPARE.length]!) };
}

/** image_encoder.blocks.3.attn.qkv.adapter.cell → blocks.3.attn.qkv */
export const shortLayer = (p: string): string => p.replace(/^image_encoder\./, '').replace(/\.adapter\.cell$/, '');

/** At most ~max points per series (every k-th, the last kept): long runs stay light in the page. */
export function thin<T extends { step: number }>(xs: readonly T[], max = 3000): T[] {
  if (xs.length <= max) return [...xs];
  const k = Math.ceil(xs.length / max);
  return xs.filter((_, i) => i % k === 0 || i === xs.length - 1);
}

function stageLayers(stages: readonly StageEvent[]): object[] {
  const values = stages.map((s) => ({ step: s.step, stage: s.stage }));
  if (!values.length) return [];
  return [
    { data: { values }, mark: { type: 'rule', strokeDash: [4, 3], color: '#999' }, encoding: { x: { field: 'step', type: 'quantitative' } } },
    { data: { values }, mark: { type: 'text', align: 'left', baseline: 'top', dx: 3, y: 2, color: '#555', fontSize: 11 }, encoding: { x: { field: 'step', type: 'quantitative' }, text: { field: 'stage' } } },
  ];
}

/** One curve per step (loss or lr) with the stage boundaries marked. */
export function stepCurve(steps: readonly StepEvent[], stages: readonly StageEvent[], field: 'loss' | 'lr', o: { title: string; log?: boolean }): object {
  const values = thin(steps).map((s) => ({ step: s.step, [field]: s[field], stage: s.stage }));
  return {
    $schema: SCHEMA, title: o.title, width: 520, height: 180,
    layer: [
      {
        data: { values }, mark: { type: 'line', strokeWidth: 1.2, color: field === 'loss' ? '#1f77b4' : '#2ca02c' },
        encoding: {
          x: { field: 'step', type: 'quantitative', title: 'step' },
          y: { field, type: 'quantitative', title: field === 'lr' ? 'learning rate' : 'loss', scale: o.log ? { type: 'log' } : { zero: false } },
          tooltip: [{ field: 'step' }, { field, format: '.5g' }, { field: 'stage' }],
        },
      },
      ...stageLayers(stages),
    ],
  };
}

/** Validation (or periodic-split) metrics over steps, one line per metric. */
export function evalCurve(evals: readonly EvalEvent[], stages: readonly StageEvent[], split: string): object {
  // Numbers only; a multi-class evaluation adds one line per class (its IoU) to mDice, mIoU and pixel accuracy.
  const values = evals.flatMap((e) => {
    const m = e.metrics as Record<string, unknown>;
    const classes = m.classes as { names: string[]; iou: Array<number | null> } | undefined;
    const named = (k: string) => (classes ? ({ dice: 'mDice', iou: 'mIoU', pixelAccuracy: 'pixel accuracy' } as Record<string, string>)[k] ?? k : k);
    return [
      ...Object.entries(m).filter(([k, v]) => k !== 'count' && typeof v === 'number').map(([k, value]) => ({ step: e.step, metric: named(k), value })),
      ...(classes ? classes.names.flatMap((n, i) => (classes.iou[i] === null ? [] : [{ step: e.step, metric: `IoU ${n}`, value: classes.iou[i] }])) : []),
    ];
  });
  return {
    $schema: SCHEMA, title: `${split} metrics over steps`, width: 520, height: 200,
    layer: [
      {
        data: { values }, mark: { type: 'line', point: true, strokeWidth: 1.5 },
        encoding: {
          x: { field: 'step', type: 'quantitative' }, y: { field: 'value', type: 'quantitative', title: 'score' },
          color: { field: 'metric', type: 'nominal' }, tooltip: [{ field: 'step' }, { field: 'metric' }, { field: 'value', format: '.4f' }],
        },
      },
      ...stageLayers(stages),
    ],
  };
}

/** softmax(α) of one cell over steps: one line per op, in the op's fixed colour. */
export function alphaChart(rows: readonly AlphaRow[], cell: string, ops: readonly string[], stages: readonly StageEvent[], until: number | null = null): object {
  // Up to the cell's discretization: after it the weights are one-hot, and a line from the last
  // search value to them would draw a change that never happened.
  const values = thin(rows.filter((r) => until === null || r.step <= until), 1000).flatMap((r) => Object.entries(r.cells[cell] ?? {}).map(([op, weight]) => ({ step: r.step, op, weight })));
  return {
    $schema: SCHEMA, title: { text: shortLayer(cell), fontSize: 12 }, width: 250, height: 120,
    layer: [
      {
        data: { values }, mark: { type: 'line', strokeWidth: 1.4 },
        encoding: {
          x: { field: 'step', type: 'quantitative' }, y: { field: 'weight', type: 'quantitative', title: 'softmax(α)', scale: { domain: [0, 1] } },
          color: { field: 'op', type: 'nominal', scale: opScale(ops), legend: null }, tooltip: [{ field: 'step' }, { field: 'op' }, { field: 'weight', format: '.3f' }],
        },
      },
      ...stageLayers(stages.filter((s) => s.stage !== 'warmup')),
    ],
  };
}

/** A legend of the op colours alone (the α charts leave theirs out to stay small). */
export function opLegend(ops: readonly string[]): object {
  return {
    $schema: SCHEMA, width: 10, height: 10, data: { values: ops.map((op) => ({ op })) }, mark: { type: 'point', opacity: 0 },
    encoding: { color: { field: 'op', type: 'nominal', scale: opScale(ops), legend: { orient: 'top', direction: 'horizontal', columns: 8, title: 'op' } } },
  };
}

export interface HeatCell { layer: string; op: string; weight: number; derived: boolean }

/** Layer × op heat map of the final weights; the derived op of each layer marked with ★. */
export function heatMap(cells: readonly HeatCell[], ops: readonly string[], layers: readonly string[], title: string): object {
  const values = cells.map((c) => ({ ...c, layer: shortLayer(c.layer), label: `derived op of ${shortLayer(c.layer)}: ${c.op}` }));
  const enc = {
    x: { field: 'op', type: 'nominal', sort: [...ops], title: 'op', axis: { labelAngle: -35 } },
    y: { field: 'layer', type: 'nominal', sort: layers.map(shortLayer), title: 'layer' },
  };
  return {
    $schema: SCHEMA, title, data: { values }, width: { step: 62 }, height: { step: 26 },
    layer: [
      { mark: 'rect', encoding: { ...enc, color: { field: 'weight', type: 'quantitative', scale: { scheme: 'blues', domain: [0, 1] }, title: 'weight' }, tooltip: [{ field: 'layer' }, { field: 'op' }, { field: 'weight', format: '.3f' }] } },
      { mark: { type: 'text', fontSize: 10 }, encoding: { ...enc, text: { field: 'weight', format: '.2f' }, color: { condition: { test: 'datum.weight > 0.55', value: 'white' }, value: '#222' } } },
      {
        transform: [{ filter: 'datum.derived' }], mark: { type: 'text', text: '★', dy: -8, dx: 20, fontSize: 13, color: '#d62728' },
        encoding: { ...enc, description: { field: 'label' } },
      },
    ],
  };
}

export interface BarPoint { method: string; seed: number; value: number }
export interface BarMean { method: string; mean: number; sd: number }

/** Per-method mean (bar) ± sd (rule), with each seed's score as a point. */
export function meanBars(means: readonly BarMean[], points: readonly BarPoint[], metric: string, methods: readonly string[]): object {
  const x = { field: 'method', type: 'nominal', sort: [...methods], axis: { labelAngle: -30 }, title: null };
  return {
    $schema: SCHEMA, title: `${metric}: mean ± sd over seeds (points: seeds)`, width: { step: 64 }, height: 220,
    layer: [
      { data: { values: means }, mark: { type: 'bar', color: '#9ecae1', opacity: 0.9 }, encoding: { x, y: { field: 'mean', type: 'quantitative', title: metric, scale: { zero: true } }, tooltip: [{ field: 'method' }, { field: 'mean', format: '.4f' }, { field: 'sd', format: '.4f' }] } },
      { data: { values: means.map((m) => ({ ...m, lo: m.mean - m.sd, hi: m.mean + m.sd })) }, mark: { type: 'rule', color: '#08306b', strokeWidth: 1.5 }, encoding: { x, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
      { data: { values: points }, mark: { type: 'point', filled: true, size: 36, color: '#d62728', opacity: 0.85 }, encoding: { x, y: { field: 'value', type: 'quantitative' }, tooltip: [{ field: 'method' }, { field: 'seed' }, { field: 'value', format: '.4f' }] } },
    ],
  };
}

/** Training time vs Dice, one point per run, coloured by method. */
export function timeScatter(runs: ReadonlyArray<{ method: string; seed: number; seconds: number; dice: number }>, methods: readonly string[]): object {
  return {
    $schema: SCHEMA, title: 'training time vs test Dice (one point per run)', width: 420, height: 240, data: { values: runs },
    mark: { type: 'point', filled: true, size: 60 },
    encoding: {
      x: { field: 'seconds', type: 'quantitative', title: 'training time (s)' }, y: { field: 'dice', type: 'quantitative', title: 'test Dice', scale: { zero: false } },
      color: { field: 'method', type: 'nominal', sort: [...methods], scale: { scheme: 'tableau10' } }, shape: { field: 'method', type: 'nominal', sort: [...methods] },
      tooltip: [{ field: 'method' }, { field: 'seed' }, { field: 'seconds', format: '.1f' }, { field: 'dice', format: '.4f' }],
    },
  };
}
