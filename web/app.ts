// The page of `naslora serve`: open an image, click and drag prompts, see SAM's mask follow.
// Three canvases at the image's own resolution, stacked and scaled together by CSS: the image, the
// mask overlay, and the prompt marks. Every prompt change sends one POST /v1/predict.
export {};  // a module: its names stay out of the page's global scope

interface Answer { masks: string[]; iou_predictions: number[]; mask_id: string; width: number; height: number; adapter: string }
type Prompt = { kind: 'point'; x: number; y: number; label: 0 | 1 } | { kind: 'box'; box: [number, number, number, number] };

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const stage = $<HTMLDivElement>('stage');
const imageCanvas = $<HTMLCanvasElement>('image'), maskCanvas = $<HTMLCanvasElement>('mask'), marksCanvas = $<HTMLCanvasElement>('marks');
const statusEl = $<HTMLDivElement>('status');
const modelSel = $<HTMLSelectElement>('model');
const multimask = $<HTMLInputElement>('multimask');

const state = {
  imageId: null as string | null, width: 0, height: 0, prompts: [] as Prompt[],
  answer: null as Answer | null, picked: 0, seq: 0,
  /** The request number whose mask is on the canvas now (tests wait for it). */
  shown: 0,
  /** The body of the last predict request (tests read it). */
  lastRequest: null as object | null,
  /** The picked mask as 0/1 at the image's size. */
  mask: null as Uint8Array | null,
};
(window as unknown as { naslora: typeof state & { ready: boolean } }).naslora = Object.assign(state, { ready: false });

function status(msg: string, error = false): void {
  statusEl.textContent = msg;
  statusEl.className = error ? 'error' : '';
}

async function api<T>(url: string, init?: RequestInit): Promise<T> {
  const r = await fetch(url, init);
  const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error((body as { error?: string }).error ?? `${r.status}`);
  return body as T;
}

async function loadModels(): Promise<void> {
  const { adapters } = await api<{ adapters: Array<{ name: string; method: string | null }> }>('/v1/adapters');
  modelSel.innerHTML = '';
  for (const a of adapters) {
    const o = document.createElement('option');
    o.value = a.name;
    o.textContent = a.method ? `${a.name} (${a.method})` : `${a.name} (no adapter)`;
    modelSel.appendChild(o);
  }
}

async function openImage(file: Blob): Promise<void> {
  status('uploading…');
  const bytes = await file.arrayBuffer();
  const r = await api<{ image_id: string; width: number; height: number }>('/v1/images', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
  const bitmap = await createImageBitmap(file);
  Object.assign(state, { imageId: r.image_id, width: r.width, height: r.height, prompts: [], answer: null, mask: null });
  for (const c of [imageCanvas, maskCanvas, marksCanvas]) {
    c.width = r.width;
    c.height = r.height;
    c.hidden = false;
    // Shown at most 900×700 CSS pixels; the canvases keep the image's own resolution.
    const scale = Math.min(1, 900 / r.width, 700 / r.height);
    c.style.width = `${r.width * scale}px`;
    c.style.height = `${r.height * scale}px`;
  }
  $('hint').hidden = true;
  imageCanvas.getContext('2d')!.drawImage(bitmap, 0, 0);
  maskCanvas.getContext('2d')!.clearRect(0, 0, r.width, r.height);
  drawMarks();
  renderPrompts();
  status(`${r.width}×${r.height} image ready: click or drag on it`);
}

/** Event position → original-image pixels (continuous). */
function toImage(e: MouseEvent): [number, number] {
  const rect = marksCanvas.getBoundingClientRect();
  const x = ((e.clientX - rect.left) / rect.width) * state.width;
  const y = ((e.clientY - rect.top) / rect.height) * state.height;
  return [Math.min(state.width, Math.max(0, x)), Math.min(state.height, Math.max(0, y))];
}

function drawMarks(drag?: [number, number, number, number]): void {
  const g = marksCanvas.getContext('2d')!;
  g.clearRect(0, 0, marksCanvas.width, marksCanvas.height);
  const r = Math.max(3, Math.round(Math.max(state.width, state.height) / 120));
  g.lineWidth = Math.max(1, r / 2);
  for (const p of state.prompts) {
    if (p.kind === 'point') {
      g.fillStyle = p.label === 1 ? '#2ca02c' : '#d62728';
      g.beginPath();
      g.arc(p.x, p.y, r, 0, 2 * Math.PI);
      g.fill();
      g.strokeStyle = '#fff';
      g.stroke();
    } else {
      g.strokeStyle = '#ffbf00';
      g.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
    }
  }
  if (drag) {
    g.setLineDash([6, 4]);
    g.strokeStyle = '#ffbf00';
    g.strokeRect(drag[0], drag[1], drag[2] - drag[0], drag[3] - drag[1]);
    g.setLineDash([]);
  }
}

function renderPrompts(): void {
  const ul = $<HTMLUListElement>('prompts');
  ul.innerHTML = '';
  for (const p of state.prompts) {
    const li = document.createElement('li');
    li.textContent = p.kind === 'point' ? `${p.label ? 'foreground' : 'background'} point (${p.x.toFixed(1)}, ${p.y.toFixed(1)})` : `box (${p.box.map((v) => v.toFixed(1)).join(', ')})`;
    ul.appendChild(li);
  }
  const has = state.prompts.length > 0;
  $<HTMLButtonElement>('undo').disabled = !has;
  $<HTMLButtonElement>('clear').disabled = !has;
}

async function decodeMask(b64: string): Promise<Uint8Array> {
  const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const bmp = await createImageBitmap(new Blob([bin], { type: 'image/png' }));
  const c = document.createElement('canvas');
  c.width = bmp.width;
  c.height = bmp.height;
  const g = c.getContext('2d')!;
  g.drawImage(bmp, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  const out = new Uint8Array(c.width * c.height);
  for (let i = 0; i < out.length; i++) out[i] = px[i * 4]! > 127 ? 1 : 0;
  return out;
}

async function showMask(k: number, seq = state.seq): Promise<void> {
  const a = state.answer;
  if (!a) return;
  state.picked = k;
  const mask = await decodeMask(a.masks[k]!);
  if (seq !== state.seq) return;  // a newer answer is being shown
  state.mask = mask;
  const g = maskCanvas.getContext('2d')!;
  const img = g.createImageData(a.width, a.height);
  for (let i = 0; i < mask.length; i++) if (mask[i]) img.data.set([30, 144, 255, 140], i * 4);
  g.putImageData(img, 0, 0);
  document.querySelectorAll('#candidates figure').forEach((f, i) => f.classList.toggle('picked', i === k));
  $<HTMLButtonElement>('download').disabled = false;
  state.shown = seq;
}

async function predict(): Promise<void> {
  if (!state.imageId) return;
  const seq = ++state.seq;
  if (!state.prompts.length) {
    state.answer = null;
    state.mask = null;
    maskCanvas.getContext('2d')!.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
    $('candidates').innerHTML = '';
    $<HTMLButtonElement>('download').disabled = true;
    return;
  }
  const points = state.prompts.flatMap((p) => (p.kind === 'point' ? [[p.x, p.y, p.label]] : []));
  const boxes = state.prompts.flatMap((p) => (p.kind === 'box' ? [p.box] : [])).slice(-1);  // the latest box
  const body = { image_id: state.imageId, adapter: modelSel.value, points, boxes, multimask: multimask.checked };
  state.lastRequest = body;
  status('predicting…');
  const t0 = performance.now();
  try {
    const a = await api<Answer>('/v1/predict', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (seq !== state.seq) return;  // a newer prompt is on its way
    state.answer = a;
    const cands = $('candidates');
    cands.innerHTML = '';
    a.masks.forEach((m, k) => {
      const f = document.createElement('figure');
      f.innerHTML = `<img alt="candidate ${k}" src="data:image/png;base64,${m}"><figcaption>IoU ${a.iou_predictions[k]!.toFixed(3)}</figcaption>`;
      f.addEventListener('click', () => { void showMask(k); });
      cands.appendChild(f);
    });
    const best = a.iou_predictions.indexOf(Math.max(...a.iou_predictions));
    await showMask(best, seq);
    status(`${a.adapter}: ${a.masks.length} mask(s) in ${(performance.now() - t0).toFixed(0)} ms`);
  } catch (e) {
    status((e as Error).message, true);
  }
}

// ---- input: drop, file, clicks, drags
$<HTMLInputElement>('file').addEventListener('change', (e) => {
  const f = (e.target as HTMLInputElement).files?.[0];
  if (f) openImage(f).catch((err: Error) => status(err.message, true));
});
stage.addEventListener('dragover', (e) => { e.preventDefault(); stage.classList.add('drag'); });
stage.addEventListener('dragleave', () => stage.classList.remove('drag'));
stage.addEventListener('drop', (e) => {
  e.preventDefault();
  stage.classList.remove('drag');
  const f = e.dataTransfer?.files[0];
  if (f) openImage(f).catch((err: Error) => status(err.message, true));
});

let down: { x: number; y: number; button: number; cx: number; cy: number } | null = null;
marksCanvas.addEventListener('contextmenu', (e) => e.preventDefault());
marksCanvas.addEventListener('mousedown', (e) => {
  const [x, y] = toImage(e);
  down = { x, y, button: e.button, cx: e.clientX, cy: e.clientY };
});
marksCanvas.addEventListener('mousemove', (e) => {
  if (!down || down.button !== 0 || Math.hypot(e.clientX - down.cx, e.clientY - down.cy) < 5) return;
  const [x, y] = toImage(e);
  drawMarks([Math.min(down.x, x), Math.min(down.y, y), Math.max(down.x, x), Math.max(down.y, y)]);
});
window.addEventListener('mouseup', (e) => {
  if (!down || !state.imageId) { down = null; return; }
  const [x, y] = toImage(e);
  const moved = Math.hypot(e.clientX - down.cx, e.clientY - down.cy) >= 5;
  if (down.button === 0 && moved) state.prompts.push({ kind: 'box', box: [Math.min(down.x, x), Math.min(down.y, y), Math.max(down.x, x), Math.max(down.y, y)] });
  else if (e.target === marksCanvas && (down.button === 0 || down.button === 2)) state.prompts.push({ kind: 'point', x: down.x, y: down.y, label: down.button === 0 ? 1 : 0 });
  else { down = null; drawMarks(); return; }
  down = null;
  drawMarks();
  renderPrompts();
  void predict();
});
$('undo').addEventListener('click', () => { state.prompts.pop(); drawMarks(); renderPrompts(); void predict(); });
$('clear').addEventListener('click', () => { state.prompts = []; drawMarks(); renderPrompts(); void predict(); });
modelSel.addEventListener('change', () => { void predict(); });
multimask.addEventListener('change', () => { void predict(); });
$('download').addEventListener('click', () => {
  const a = state.answer;
  if (!a) return;
  const link = document.createElement('a');
  link.href = `data:image/png;base64,${a.masks[state.picked]}`;
  link.download = `mask_${a.adapter}.png`;
  link.click();
});

loadModels().then(() => { (window as unknown as { naslora: { ready: boolean } }).naslora.ready = true; status('open or drop an image'); }, (e: Error) => status(e.message, true));
