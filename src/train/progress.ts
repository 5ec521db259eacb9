// Progress of long work: a bar with step, loss, throughput and ETA on a terminal (cli-progress),
// JSON lines on stdout otherwise (CI logs, pipes).
import cliProgress from 'cli-progress';

export interface Progress {
  start(total: number, at: number): void;
  tick(step: number, info: { loss: number; stage: string }): void;
  log(msg: string): void;
  stop(): void;
}

export const silentProgress: Progress = { start() {}, tick() {}, log() {}, stop() {} };

/** `jsonStream`: where the JSON lines go when `stream` is not a terminal (default stdout). */
export function makeProgress(label: string, o: { logEvery?: number; stream?: NodeJS.WriteStream; jsonStream?: NodeJS.WritableStream } = {}): Progress {
  const stream = o.stream ?? process.stderr;
  if (!stream.isTTY) return jsonProgress(label, o.logEvery ?? 10, o.jsonStream ?? process.stdout);
  return ttyProgress(label, stream);
}

interface BarPayload { loss: string; stage: string; rate: string }

/** Terminal bars now drawn: an error ends them (endLiveBars) so its message starts on a line of its own. */
const live = new Set<() => void>();

/** Ends every live terminal bar (its last state stays on screen); the CLI calls it before printing an error. */
export function endLiveBars(): void {
  for (const stop of [...live]) stop();
}

/**
 * The bar on a terminal. cli-progress's SingleBar is not used: it saves the cursor at start() and
 * restores it at stop() (ESC 7 / ESC 8, absolute screen coordinates), so once log lines have
 * scrolled the screen, everything printed after stop() overwrote earlier lines; and it turns the
 * terminal's autowrap off while it runs, which cut log lines wider than the terminal. MultiBar
 * (one bar) has neither: its log() lines are written above the bar on the next redraw, which log()
 * forces at once, so each line is on the screen, whole and in order, before the call returns; the
 * bar is redrawn below it. The bar line is fitted to the terminal's width (a bar line that wraps
 * leaves its first row behind on every redraw), and stop() draws its last state once and moves to
 * a fresh line, so what is printed next starts on a line of its own.
 */
function ttyProgress(label: string, stream: NodeJS.WriteStream): Progress {
  let multi: cliProgress.MultiBar | null = null;
  let bar: cliProgress.SingleBar | null = null;
  let t0 = Date.now();
  let s0 = 0;
  let lastDraw = 0;
  const redrawMs = 100;
  const format: cliProgress.GenericFormatter = (options, params, payload: BarPayload) =>
    barLine(label, params, payload, stream.columns || 80, (t) => cliProgress.Format.TimeFormat(t, options, 5));
  const redraw = () => { multi!.update(); lastDraw = Date.now(); };
  // An exit while the bar runs (an error): give the cursor back and leave the bar's line.
  const onExit = () => { if (multi) stream.write('\n\x1b[?25h'); };
  const stop = () => {
    if (!multi) return;
    multi.stop();
    multi = null;
    bar = null;
    live.delete(stop);
    process.removeListener('exit', onExit);
  };
  return {
    start(total, at) {
      stop();
      t0 = Date.now();
      s0 = at;
      multi = new cliProgress.MultiBar({
        format, stream, hideCursor: true, etaBuffer: 20, fps: 1000 / redrawMs,
        // Autowrap stays on (log lines wider than the terminal wrap instead of being cut): the bar
        // line is fitted to the width by `format`. Redraw even when the bar did not change, so the
        // bar comes back below the lines a log() wrote over it. Keep the last state on stop().
        linewrap: true, forceRedraw: true, clearOnComplete: false, stopOnComplete: false,
      }, cliProgress.Presets.shades_classic);
      bar = multi.create(total, at, { loss: '-', stage: '', rate: '-' } satisfies BarPayload);
      process.on('exit', onExit);
      live.add(stop);
      redraw();
    },
    tick(step, i) {
      if (!bar) return;
      const rate = (step - s0) / Math.max(1e-3, (Date.now() - t0) / 1000);
      bar.update(step, { loss: i.loss.toFixed(4), stage: i.stage, rate: rate.toFixed(2) } satisfies BarPayload);
      if (Date.now() - lastDraw >= redrawMs) redraw();  // the timer may not run while a step blocks
    },
    log(msg) {
      const text = msg.endsWith('\n') ? msg : `${msg}\n`;
      if (!multi) { stream.write(text); return; }
      multi.log(text);
      redraw();
    },
    stop,
  };
}

/** `label stage |████░░░░| 12/30 loss 0.1234 | 5.10 step/s | ETA 4s`, narrower than `columns`. */
export function barLine(label: string, params: cliProgress.Params, p: BarPayload, columns: number, time: (t: number) => string): string {
  const width = Math.max(10, columns - 1);  // not the last column: no pending wrap after the bar
  const eta = typeof params.eta === 'number' && Number.isFinite(params.eta) ? time(params.eta) : '-';
  const head = p.stage ? `${label} ${p.stage} ` : `${label} `;
  // On a narrow terminal the rate goes first, then the ETA, then the bar; the rest is cut.
  const tails = [
    ` ${params.value}/${params.total} loss ${p.loss} | ${p.rate} step/s | ETA ${eta}`,
    ` ${params.value}/${params.total} loss ${p.loss} | ETA ${eta}`,
    ` ${params.value}/${params.total} loss ${p.loss}`,
  ];
  const tail = tails.find((t) => width - head.length - t.length - 2 >= 10) ?? tails[tails.length - 1];
  const size = Math.min(40, width - head.length - tail.length - 2);
  let line: string;
  if (size >= 10) {
    const n = Math.max(0, Math.min(size, Math.round(params.progress * size)));
    line = `${head}|${'\u2588'.repeat(n)}${'\u2591'.repeat(size - n)}|${tail}`;
  } else {
    line = `${head.trimEnd()}${tail}`;
  }
  return line.length > width ? line.slice(0, width) : line;
}

function jsonProgress(label: string, every: number, out: NodeJS.WritableStream): Progress {
  let total = 0;
  let t0 = Date.now();
  let s0 = 0;
  const emit = (o: object) => out.write(JSON.stringify({ task: label, ...o }) + '\n');
  return {
    start(t, at) { total = t; t0 = Date.now(); s0 = at; emit({ event: 'start', total, at }); },
    tick(step, i) {
      if (step % every !== 0 && step !== total) return;
      const rate = (step - s0) / Math.max(1e-3, (Date.now() - t0) / 1000);
      emit({ event: 'progress', step, total, loss: +i.loss.toFixed(6), stage: i.stage, steps_per_s: +rate.toFixed(3), eta_s: Math.round((total - step) / Math.max(rate, 1e-9)) });
    },
    log(msg) { emit({ event: 'log', msg }); },
    stop() { emit({ event: 'done', total }); },
  };
}
