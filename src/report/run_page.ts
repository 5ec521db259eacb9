// The page of one run: how training went (loss, learning rate, periodic metrics, stages), what the
// search chose (softmax(α) per layer over steps, the final weights with the derived op), the test
// scores (summary and per image) and a few test images with their predictions.
import { alphaChart, evalCurve, heatMap, opLegend, shortLayer, stepCurve, type HeatCell } from './charts.js';
import { chart, esc, num, page, table, td } from './html.js';
import { classLegendHtml, examplePanels, imgTag, legendHtml, type ImageBudget } from './images.js';
import type { RunData } from './load.js';
import type { ClassTable } from '../eval/multiclass.js';

const METRIC_LABELS: Record<string, string> = {
  dice: 'Dice', iou: 'IoU', pixelAccuracy: 'pixel accuracy', sMeasure: 'S-measure', meanEMeasure: 'mean E-measure', weightedF: 'weighted F', mae: 'MAE', ber: 'BER',
};
const label = (k: string) => METRIC_LABELS[k] ?? k;

/** The ops of the run's NAS cells, in the config's order (or as the history lists them). */
function opsOf(r: RunData): string[] {
  const method = (r.config?.method ?? {}) as { ops?: string[] };
  if (Array.isArray(method.ops) && method.ops.length) return method.ops;
  const first = r.alpha[0] ? Object.values(r.alpha[0].cells)[0] : r.derived?.cells ? Object.values(r.derived.cells)[0]?.weights : undefined;
  return first ? Object.keys(first) : [];
}

export function statusBanner(r: RunData): string {
  const parts: string[] = [];
  if (!r.complete) {
    const of = r.total ? ` of ${r.total}` : '';
    parts.push(`<div class="banner warn" id="partial"><b>Partial run.</b> There is no metrics.json: this run is still running or was stopped. Events up to step ${r.lastStep}${of}; no test scores yet.</div>`);
  }
  for (const n of r.notes) parts.push(`<div class="banner info note">${esc(n)}</div>`);
  return parts.join('\n');
}

function summaryTable(r: RunData): string {
  const m = r.metrics;
  if (!m) return '<p class="muted">No scores yet (the run has not finished).</p>';
  const splits = (['test', 'val', 'train'] as const).filter((s) => m[s]);
  const keys = [...new Set(splits.flatMap((s) => Object.entries(m[s]!).filter(([k, v]) => k !== 'count' && typeof v === 'number').map(([k]) => k)))];
  const multi = splits.some((s) => 'classes' in m[s]!);
  const res = m.scoring ? (m.scoring.test_resolution === 'label' ? `at label size ${m.scoring.label_size}×${m.scoring.label_size}` : 'at original resolution') : '';
  const what = multi
    ? 'Multi-class: Dice and IoU are mDice and mIoU, from the per-class sums over the split, averaged over the classes present (in prediction or ground truth)'
    : 'Mean over images';
  return `<p class="muted">${what}${res ? `; test ${res}` : ''}.${m.best ? ` Best ${esc(m.best.split)} ${multi ? 'mDice' : 'Dice'} ${m.best.dice.toFixed(4)} at step ${m.best.step} (checkpoints/best).` : ''}</p>`
    + table({
      id: 'metrics-table', head: ['split', 'images', ...keys.map(label)],
      rows: splits.map((s) => [`<td data-split="${s}">${s}</td>`, num(m[s]!.count), ...keys.map((k) => `${num(m[s]![k]).replace('<td', `<td data-metric="${k}"`)}`)]),
    })
    + (multi ? classTable(m) : '')
    + `<p class="muted">Parameters trained: ${m.trainable_parameters.toLocaleString('en-US')} (encoder adapter ${m.adapter_parameters.toLocaleString('en-US')}); training time ${m.seconds.toFixed(1)} s.</p>`;
}

/** Per class and split: IoU and Dice (– where the class is in neither map) and its ground-truth pixel share. */
function classTable(m: NonNullable<RunData['metrics']>): string {
  const splits = (['test', 'val', 'train'] as const).filter((s) => m[s] && 'classes' in m[s]!);
  const tables = splits.map((s) => [s, (m[s] as unknown as { classes: ClassTable }).classes] as const);
  const names = tables[0]![1].names;
  return `<h3>Per class</h3>` + table({
    id: 'class-table', head: ['class', ...tables.flatMap(([s]) => [`${s} IoU`, `${s} Dice`, `${s} pixels`])],
    rows: names.map((n, i) => [`<td data-class="${i}">${esc(n)}</td>`, ...tables.flatMap(([, c]) => {
      const total = c.pixels.reduce((a, b) => a + b, 0);
      return [num(c.iou[i] ?? null), num(c.dice[i] ?? null), td(total ? `${((100 * c.pixels[i]!) / total).toFixed(1)} %` : '')];
    })]),
  });
}

function perImageTable(r: RunData): string {
  const p = r.perImage;
  if (!p) return '';
  const first = (p.rows[0] ?? {}) as Record<string, unknown>;
  const keys = Object.keys(first).filter((k) => k !== 'id' && typeof first[k] === 'number');
  const res = p.resolution === 'label' ? `at label size ${p.label_size}×${p.label_size}` : 'at original resolution';
  return `<h2 id="per-image">Per-image test metrics</h2><p class="muted">${p.rows.length} images, ${res}; click a column to sort.</p>`
    + table({ id: 'per-image-table', sortable: true, head: ['image', ...keys.map(label)], rows: p.rows.map((row) => [td(row.id), ...keys.map((k) => num(row[k] as number))]) })
    + (Array.isArray(first.classIou) ? '<p class="muted">Multi-class: an image\'s Dice and IoU are its mDice and mIoU over the classes in its prediction or ground truth.</p>' : '');
}

async function examplesSection(r: RunData, budget: ImageBudget): Promise<string> {
  const ex = r.examples;
  if (!ex) return '';
  const order = ['best', 'median', 'worst', 'fixed'];
  const items = [...ex.items].sort((a, b) => Math.min(...a.roles.map((x) => order.indexOf(x))) - Math.min(...b.roles.map((x) => order.indexOf(x))));
  const out: string[] = [];
  let skipped = 0;
  for (const it of items) {
    const p = await examplePanels(ex.dir, it, ex.classes ?? null);
    if (!budget.fits([p.image, p.gt, p.pred, p.error])) { skipped++; continue; }
    const fig = (png: Buffer, what: string) => `<figure>${imgTag(png, p.width, p.height, { 'data-panel': what, alt: `${it.id}: ${what}` })}<figcaption>${what}</figcaption></figure>`;
    const score = it.dice === null ? '' : ` — Dice ${it.dice.toFixed(4)}${it.iou === null ? '' : `, IoU ${it.iou.toFixed(4)}`}`;
    out.push(`<div class="example" data-id="${esc(it.id)}" data-width="${p.width}" data-height="${p.height}"><h3>${esc(it.roles.join(', '))}: ${esc(it.id)} <span class="muted">(${p.width}×${p.height})${score}</span></h3>`
      + fig(p.image, 'image') + fig(p.gt, 'ground truth') + fig(p.pred, 'prediction') + fig(p.error, 'error map') + '</div>');
  }
  const rule = ex.classes ? 'prediction = the class with the highest logit' : `prediction = probability &gt; ${ex.prob_threshold}`;
  return `<h2 id="examples">Test images: best, median and worst by Dice</h2><p class="muted">At each image's original resolution; ${rule}.</p>${ex.classes ? classLegendHtml(ex.classes) : legendHtml()}`
    + `<div class="examples">${out.join('\n')}</div>`
    + (skipped ? `<p class="banner info">${skipped} more example(s) left out to keep the report small (image budget).</p>` : '');
}

function searchSection(r: RunData, specs: Map<string, object>): string {
  const ops = opsOf(r);
  const cells = [...new Set([...r.alpha.flatMap((a) => Object.keys(a.cells)), ...Object.keys(r.derived?.derived ?? {})])];
  if (!cells.length) return '';
  const out: string[] = ['<h2 id="search">Architecture search</h2>'];
  if (r.alpha.length) {
    out.push(`<p class="muted">softmax(α) per adapted layer over the steps where α trains, up to the layer's discretization (one chart per layer, one line per op; dashed lines: stage changes).</p>`);
    out.push(`<div class="charts">${chart(specs, 'op-legend', opLegend(ops), 'ops')}</div>`);
    out.push(`<div class="charts" id="alpha-charts">${cells.map((c) => chart(specs, 'alpha', alphaChart(r.alpha, c, ops, r.stages, r.derived?.cells?.[c]?.step ?? null), c)).join('')}</div>`);
  }
  // Final weights: each cell's weights when it was discretized, else the last α recorded.
  const last = r.alpha[r.alpha.length - 1];
  const heat: HeatCell[] = [];
  for (const c of cells) {
    const w = r.derived?.cells?.[c]?.weights ?? last?.cells[c] ?? {};
    const d = r.derived?.derived[c];
    for (const op of ops) heat.push({ layer: c, op, weight: w[op] ?? 0, derived: d === op });
  }
  const what = r.derived ? `derived ops at step ${r.derived.step} (★; weights when each cell was discretized)` : `no derived ops yet (the search has not ended): the last α recorded${last ? `, step ${last.step}` : ''}`;
  out.push(`<h3>Final weights per layer and op</h3><p class="muted">${what}.</p>`, chart(specs, 'heatmap', heatMap(heat, ops, cells, 'final softmax(α)'), 'final weights'));
  if (r.derived) {
    out.push(table({
      id: 'derived-table', head: ['layer', 'derived op', 'margin', 'at step', 'early', 'folded into lora_B'],
      rows: cells.map((c) => {
        const x = r.derived!.cells?.[c];
        return [td(shortLayer(c)), `<td data-cell="${esc(c)}">${esc(r.derived!.derived[c] ?? '')}</td>`, num(x?.margin ?? null, 3), num(x?.step ?? null), td(x ? (x.early ? 'yes' : 'no') : ''), td(x ? (x.folded ? 'yes' : 'no') : '')];
      }),
    }));
  }
  return out.join('\n');
}

export async function runPage(r: RunData, o: { budget: ImageBudget; title?: string; reportPath: string }): Promise<string> {
  const specs = new Map<string, object>();
  const method = (r.config?.method as { name?: string } | undefined)?.name ?? r.metrics?.method ?? 'run';
  const split = (r.config?.eval as { split?: string } | undefined)?.split ?? 'val';
  const body: string[] = [
    `<h1>${esc(o.title ?? `naslora run: ${method}`)}</h1>`,
    `<p class="muted">Run folder <code>${esc(r.dir)}</code>; ${r.complete ? 'finished' : 'not finished'}.</p>`,
    statusBanner(r),
    '<h2 id="scores">Scores</h2>', summaryTable(r),
  ];
  if (r.steps.length) {
    const stages = r.stages.map((s) => `${s.stage} from step ${s.step}${s.end !== undefined ? ` to ${s.end}` : ''}`).join('; ');
    body.push('<h2 id="training">Training</h2>', `<p class="muted">${r.steps.length} steps recorded${stages ? `; stages: ${esc(stages)}` : ''}.</p>`,
      `<div class="charts">${chart(specs, 'loss', stepCurve(r.steps, r.stages, 'loss', { title: 'training loss per step' }), 'loss')}${chart(specs, 'lr', stepCurve(r.steps, r.stages, 'lr', { title: 'learning rate' }), 'learning rate')}</div>`);
    if (r.evals.length) body.push(`<div class="charts">${chart(specs, 'eval', evalCurve(r.evals, r.stages, split), `${split} metrics`)}</div>`);
  }
  body.push(searchSection(r, specs));
  body.push(perImageTable(r));
  body.push(await examplesSection(r, o.budget));
  if (r.config) body.push(`<h2 id="config">Configuration</h2><details><summary>resolved config (config.resolved.json)</summary><pre>${esc(JSON.stringify(r.config, null, 2))}</pre></details>`);
  return page({ title: o.title ?? `naslora run: ${method}`, body: body.filter(Boolean).join('\n'), specs, kind: 'run' });
}
