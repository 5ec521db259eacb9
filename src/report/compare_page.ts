// The page of a comparison: per-method mean ± sd with the seeds as points, time vs Dice per run,
// parameters, the derived ops of every NAS run side by side, and a link to each run's own page.
import * as path from 'node:path';
import { meanBars, shortLayer, timeScatter } from './charts.js';
import { chart, esc, num, page, table, td } from './html.js';
import type { CompareData } from './load.js';

export function comparePage(c: CompareData, o: { reportPath: string; runPages: Map<string, string> }): string {
  const specs = new Map<string, object>();
  const methods = c.methods.map((m) => m.method);
  const body: string[] = [`<h1>naslora compare: ${esc(path.basename(path.resolve(c.dir)))}</h1>`,
    `<p class="muted">${c.runs.length} runs, ${methods.length} methods; every method × seed trained with the same data, steps, batch and evaluation; test scores.</p>`];
  for (const n of c.notes) body.push(`<div class="banner ${c.complete ? 'info' : 'warn'}${c.complete ? '' : '" id="partial'}">${esc(n)}</div>`);
  body.push(table({
    id: 'compare-table', head: ['method', 'preset', 'seeds', 'Dice mean', 'Dice sd', 'IoU mean', 'IoU sd', 'train time (s)', 'trainable params', 'adapter params'],
    rows: c.methods.map((m) => [td(m.method), td(m.preset), num(m.n), num(m.dice_mean), num(m.dice_sd), num(m.iou_mean), num(m.iou_sd), num(m.seconds_mean, 1), num(m.trainable_params), num(m.adapter_params)]),
  }));
  body.push('<h2 id="scores">Scores</h2>', '<div class="charts">'
    + (['dice', 'iou'] as const).map((k) => chart(specs, 'bars', meanBars(
      c.methods.map((m) => ({ method: m.method, mean: m[`${k}_mean`], sd: m[`${k}_sd`] })),
      c.runs.map((r) => ({ method: r.method, seed: r.seed, value: r[k] })), k === 'dice' ? 'Dice' : 'IoU', methods), k)).join('')
    + chart(specs, 'scatter', timeScatter(c.runs.map((r) => ({ method: r.method, seed: r.seed, seconds: r.seconds, dice: r.dice })), methods), 'time vs Dice') + '</div>');

  const nas = c.runs.filter((r) => r.derived_ops && Object.keys(r.derived_ops).length);
  if (nas.length) {
    const layers = [...new Set(nas.flatMap((r) => Object.keys(r.derived_ops!)))];
    body.push('<h2 id="derived">Derived ops of every NAS run</h2>', table({
      id: 'derived-table', head: ['layer', ...nas.map((r) => `${r.method} seed ${r.seed}`)],
      rows: layers.map((l) => [td(shortLayer(l)), ...nas.map((r) => td(r.derived_ops![l] ?? ''))]),
    }));
  }
  const base = path.dirname(o.reportPath);
  body.push('<h2 id="runs">Runs</h2>', table({
    id: 'runs-table', sortable: true, head: ['method', 'seed', 'status', 'Dice', 'IoU', 'time (s)', 'run page'],
    rows: c.runs.map((r) => {
      const pageFile = o.runPages.get(r.run_dir);
      const link = pageFile ? `<td><a href="${esc(path.relative(base, pageFile).split(path.sep).join('/'))}">${esc(path.relative(base, r.run_dir) || '.')}</a></td>` : td('(no page)');
      return [td(r.method), num(r.seed), td(r.status), num(r.dice), num(r.iou), num(r.seconds, 1), link];
    }),
  }));
  return page({ title: `naslora compare: ${path.basename(path.resolve(c.dir))}`, body: body.join('\n'), specs, kind: 'compare' });
}
