// The demo's page: the results table, and for a few target images the source model's prediction
// next to each adapted method's (training seed 0 of each), with links to every run's page.
import * as path from 'node:path';
import { shortLayer } from './charts.js';
import { esc, num, page, table, td } from './html.js';
import { COLOURS, errorPng, imgTag, legendHtml, maskPng, readMask, type ImageBudget } from './images.js';
import { readJson, type DemoData } from './load.js';
import type { ExamplesFile } from '../eval/examples.js';
import * as fs from 'node:fs';

export async function demoPage(d: DemoData, o: { reportPath: string; runPages: Map<string, string>; budget: ImageBudget }): Promise<string> {
  const body: string[] = ['<h1>naslora demo: adapting a small SAM to a new domain</h1>',
    `<p class="muted">A tiny SAM pretrained on a synthetic source domain, adapted to a different synthetic target domain; held-out target images; ${d.seeds.length} training seed(s) per method (${d.seeds.join(', ')}), the same data for all.</p>`];
  body.push('<h2 id="results">Results</h2>', table({
    id: 'demo-table', head: ['method', 'seeds', 'Dice', 'Dice sd', 'IoU', 'IoU sd', 'trainable params', 'encoder adapter params', 'train time (s)'],
    rows: d.rows.map((r) => [td(r.method), num(r.n), num(r.dice), num(r.dice_sd), num(r.iou), num(r.iou_sd), num(r.trainable), num(r.adapter), num(r.seconds, 1)]),
  }));
  const layers = [...new Set(Object.values(d.derived).flatMap((x) => Object.keys(x)))];
  if (layers.length) {
    body.push('<h3>NAS-LoRA derived op per layer</h3>', table({
      id: 'derived-table', head: ['layer', ...Object.keys(d.derived)], rows: layers.map((l) => [td(shortLayer(l)), ...Object.values(d.derived).map((x) => td(x[l] ?? ''))]),
    }));
  }

  // Side by side: the same fixed target images in every run (examples.json role "fixed").
  const seed0 = d.seeds[0];
  const columns: Array<{ name: string; ex: ExamplesFile & { dir: string } }> = [];
  if (d.source) columns.push({ name: 'source model (no adaptation)', ex: d.source });
  const order = d.rows.map((r) => r.method);
  for (const r of [...d.runs].sort((a, b) => order.indexOf(a.method) - order.indexOf(b.method))) {
    if (r.seed !== seed0) continue;
    const f = path.join(r.dir, 'examples', 'examples.json');
    if (fs.existsSync(f)) columns.push({ name: r.method, ex: { ...readJson<ExamplesFile>(f), dir: path.join(r.dir, 'examples') } });
  }
  const ids = (d.source?.items ?? []).filter((i) => i.roles.includes('fixed')).map((i) => i.id);
  if (ids.length && columns.length) {
    body.push('<h2 id="side-by-side">Source model vs adapted methods</h2>',
      `<p class="muted">Target test images at their original resolution; each method's prediction (training seed ${seed0}) as an error map against the ground truth.</p>${legendHtml()}`);
    const rows: string[] = [];
    for (const id of ids) {
      const first = columns[0]!.ex.items.find((i) => i.id === id)!;
      const gt = await readMask(path.join(columns[0]!.ex.dir, first.gt));
      const cells: string[] = [];
      const pngs: Buffer[] = [fs.readFileSync(path.join(columns[0]!.ex.dir, first.image)), await maskPng(gt, COLOURS.gt)];
      const names = ['image', 'ground truth'];
      for (const c of columns) {
        const it = c.ex.items.find((i) => i.id === id);
        if (!it) continue;
        pngs.push(await errorPng(gt, await readMask(path.join(c.ex.dir, it.pred))));
        names.push(`${c.name}${it.dice === null ? '' : `: Dice ${it.dice.toFixed(3)}`}`);
      }
      if (!o.budget.fits(pngs)) continue;
      pngs.forEach((p, k) => cells.push(`<figure>${imgTag(p, gt.width, gt.height, { 'data-panel': k < 2 ? names[k]! : 'prediction', alt: `${id}: ${names[k]}` })}<figcaption>${esc(names[k])}</figcaption></figure>`));
      rows.push(`<div class="example" data-id="${esc(id)}"><h3>${esc(id)}</h3>${cells.join('')}</div>`);
    }
    body.push(`<div class="examples" id="side-by-side-grid">${rows.join('\n')}</div>`);
  }

  const base = path.dirname(o.reportPath);
  body.push('<h2 id="runs">Runs</h2><ul>' + d.runs.map((r) => {
    const p = o.runPages.get(r.dir);
    const name = `${r.method}${r.seed === null ? '' : ` seed ${r.seed}`}`;
    return `<li>${p ? `<a href="${esc(path.relative(base, p).split(path.sep).join('/'))}">${esc(name)}</a>` : esc(name)}</li>`;
  }).join('') + '</ul>');
  return page({ title: 'naslora demo', body: body.join('\n'), specs: new Map(), kind: 'demo' });
}
