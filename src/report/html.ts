// The page shell every report shares: one self-contained HTML file. Vega, Vega-Lite and vega-embed
// are inlined from node_modules (no CDN, no network: the page opens from file://), the chart specs
// travel as one JSON block, and a short script renders them as SVG and makes tables sortable.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** The UMD builds, in load order (vega-lite and vega-embed read the `vega` global). */
function libraries(): string[] {
  const build = (pkg: string, file: string) => path.join(path.dirname(require.resolve(pkg)), file);
  const files = [build('vega', 'vega.min.js'), build('vega-lite', 'vega-lite.min.js'), build('vega-embed', 'vega-embed.min.js')];
  return files.map((f) => {
    if (!fs.existsSync(f)) throw new Error(`${f}: missing (the report inlines Vega from node_modules; run npm ci)`);
    return fs.readFileSync(f, 'utf8');
  });
}

let cached: string[] | null = null;

export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A number for a table cell: shown rounded, the full value in data-value (what tests and sorting read). */
export function num(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined || Number.isNaN(v)) return '<td class="num" data-value="">–</td>';
  const shown = Number.isInteger(v) ? v.toLocaleString('en-US') : v.toFixed(digits);
  return `<td class="num" data-value="${v}">${shown}</td>`;
}

export interface TableSpec { id?: string; head: string[]; rows: string[][]; sortable?: boolean; cls?: string }

/** rows hold ready-made cells (`<td>…</td>`, e.g. from num() or td()). */
export function table(t: TableSpec): string {
  const cls = [t.sortable ? 'sortable' : '', t.cls ?? ''].filter(Boolean).join(' ');
  return `<table${t.id ? ` id="${esc(t.id)}"` : ''}${cls ? ` class="${cls}"` : ''}><thead><tr>${t.head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>`
    + `<tbody>${t.rows.map((r) => `<tr>${r.join('')}</tr>`).join('')}</tbody></table>`;
}

export const td = (s: unknown, cls = ''): string => `<td${cls ? ` class="${cls}"` : ''}>${esc(s)}</td>`;

/** A chart slot: kind and title are for people and tests (data-kind, data-title). */
export function chart(specs: Map<string, object>, kind: string, spec: object, title = ''): string {
  const id = `chart-${specs.size}`;
  specs.set(id, spec);
  return `<div class="chart" id="${id}" data-kind="${esc(kind)}" data-title="${esc(title)}"></div>`;
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;color:#1d1d1f}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0}.banner.warn{background:#fff4e5;border:1px solid #f0b35a}.banner.info{background:#eef5ff;border:1px solid #9cc2f0}
table{border-collapse:collapse;margin:6px 0;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f6f6f6}table.sortable th{cursor:pointer}table.sortable th:after{content:" ⇅";color:#aaa}
.charts{display:flex;flex-wrap:wrap;gap:10px}.chart{min-height:60px}
.examples figure{display:inline-block;margin:4px 8px 12px 0;vertical-align:top}.examples figcaption{font-size:12px;color:#555;max-width:260px}
.examples img{image-rendering:pixelated;border:1px solid #ccc;display:block}
.example{margin:8px 0 16px}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px -2px 10px;border:1px solid #999}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}details{margin:8px 0}code{font-size:12px}.muted{color:#666}
`;

const BOOT = `
(function(){
  var specs = JSON.parse(document.getElementById('naslora-specs').textContent);
  var views = {};
  window.naslora = { views: views, ready: Promise.all(Object.keys(specs).map(function(id){
    return vegaEmbed('#' + id, specs[id], { actions: false, renderer: 'svg' }).then(function(r){ views[id] = r.view; });
  })).then(function(){ document.body.setAttribute('data-ready', '1'); return true; }, function(e){ console.error('naslora report: a chart failed: ' + e); throw e; }) };
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('th').forEach(function(th, col){
      th.addEventListener('click', function(){
        var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('data-dir') === 'asc' ? -1 : 1;
        t.querySelectorAll('th').forEach(function(h){ h.removeAttribute('data-dir'); });
        th.setAttribute('data-dir', dir === 1 ? 'asc' : 'desc');
        var key = function(r){ var c = r.cells[col]; var v = c.getAttribute('data-value'); return v !== null && v !== '' ? Number(v) : c.textContent; };
        rows.sort(function(a, b){ var x = key(a), y = key(b); return (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))) * dir; });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
})();
`;

/** JSON inside <script>: '<' escaped so no '</script>' can end the block early. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

export function page(o: { title: string; body: string; specs: Map<string, object>; kind: string }): string {
  cached ??= libraries();
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="generator" content="naslora report"><meta name="naslora-report" content="${esc(o.kind)}">
<title>${esc(o.title)}</title><style>${STYLE}</style>
${cached.map((js) => `<script>${js}</script>`).join('\n')}
</head><body>
${o.body}
<script type="application/json" id="naslora-specs">${scriptJson(Object.fromEntries(o.specs))}</script>
<script>${BOOT}</script>
</body></html>
`;
}
