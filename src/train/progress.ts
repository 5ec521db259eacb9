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
  const bar = new cliProgress.SingleBar({
    format: `${label} {stage} |{bar}| {value}/{total} loss {loss} | {rate} step/s | ETA {eta_formatted}`,
    stream, hideCursor: true, etaBuffer: 20,
  }, cliProgress.Presets.shades_classic);
  let t0 = Date.now();
  let s0 = 0;
  return {
    start(total, at) { t0 = Date.now(); s0 = at; bar.start(total, at, { loss: '-', stage: '', rate: '-' }); },
    tick(step, i) {
      const rate = (step - s0) / Math.max(1e-3, (Date.now() - t0) / 1000);
      bar.update(step, { loss: i.loss.toFixed(4), stage: i.stage, rate: rate.toFixed(2) });
    },
    log(msg) { stream.write(`\r\x1b[2K${msg}\n`); },  // the bar redraws on its next update
    stop() { bar.stop(); },
  };
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
