// The progress bar on a real terminal: a short NAS-LoRA `naslora train` runs under a pseudo-terminal
// (util-linux `script`) of 120×20, and the captured bytes are rendered by a terminal emulator
// (@xterm/headless) into a screen with scrollback. What is asserted is the FINAL SCREEN, as a user
// would read it: every log line once, complete, in order, above the bar; the bar's last state at
// most once and never on a line shared with log text; the summary printed after the bar on lines
// of its own; lines wider than the terminal wrapped, not cut or merged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import xterm from '@xterm/headless';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const COLS = 120;
const ROWS = 20;
const STEPS = 30;

const TINY = {
  img_size: 64, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 4, global_attn_indexes: [1],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 1, decoder_mlp_dim: 64, decoder_heads: 2, iou_head_hidden_dim: 16,
};

// util-linux `script` (BSD's has no -c): without it there is no pseudo-terminal to run in.
const hasScript = /util-linux/.test(spawnSync('script', ['--version'], { encoding: 'utf8' }).stdout ?? '');

const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Runs `naslora train` in a 120×20 pseudo-terminal; returns the bytes the terminal received. */
function runInPty(work: string, extra: string[] = []): { bytes: Buffer; status: number | null; out: string } {
  const modelConfig = path.join(work, 'tiny.json');
  fs.writeFileSync(modelConfig, JSON.stringify({ config: TINY }));
  // A long folder name makes the `done:` line wider than the terminal (it must wrap, not be cut).
  const out = path.join(work, `run-${'x'.repeat(COLS)}`);
  const args = ['train', '-c', 'nas-lora',
    '--set', `model.config=${modelConfig}`, '--set', 'model.checkpoint=null', '--set', 'model.pretrained=none',
    '--set', 'data.dir=null', '--set', 'data.synthetic={kind: target, n: 24, size: 64, seed: 0}',
    '--set', 'data.image_size=64', '--set', 'data.batch_size=2', '--set', 'method.rank=4',
    '--set', 'train.epochs=null', '--set', `train.steps=${STEPS}`, '--set', 'train.eval_every=10', '--set', 'train.log_every=5',
    '--set', `train.out_dir=${out}`, ...extra];
  const inner = `stty cols ${COLS} rows ${ROWS} && exec ${[process.execPath, CLI, ...args].map(sh).join(' ')}`;
  const r = spawnSync('script', ['-qfec', inner, '/dev/null'], {
    stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000, env: { ...process.env, TERM: 'xterm-256color', NO_COLOR: '1' },
  });
  if (r.error) throw r.error;
  return { bytes: r.stdout, status: r.status, out };
}

/** The emulator's final screen and scrollback as logical lines (soft-wrapped rows joined). */
async function render(bytes: Buffer): Promise<string[]> {
  const term = new xterm.Terminal({ cols: COLS, rows: ROWS, scrollback: 5000, allowProposedApi: true });
  await new Promise<void>((res) => term.write(new Uint8Array(bytes), res));
  const buf = term.buffer.active;
  const lines: string[] = [];
  for (let i = 0; i < buf.length; i++) {
    const l = buf.getLine(i)!;
    const s = l.translateToString(true);
    if (l.isWrapped && lines.length) lines[lines.length - 1] += s;
    else lines.push(s);
  }
  term.dispose();
  while (lines.length && lines[lines.length - 1].trim() === '') lines.pop();
  return lines;
}

test(`naslora train on a ${COLS}×${ROWS} terminal: log lines above the bar, complete and in order; the summary after it`, { skip: hasScript ? false : 'no util-linux script' }, async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-tty-'));
  try {
    const { bytes, status, out } = runInPty(work);
    const screen = await render(bytes);
    const dump = `\n--- final screen (${screen.length} lines) ---\n${screen.join('\n')}\n---`;
    assert.equal(status, 0, dump);

    const isBar = (s: string) => /[█░]/.test(s) || /\|\s*\d+\/\d+ loss /.test(s);
    const barLines = screen.filter(isBar);
    assert.ok(barLines.length >= 1, `no progress bar on the screen${dump}`);
    // A bar line is a bar and nothing else: it starts with the label and carries no log text.
    const logText = /data:|stage |step \d+:|search:|warning:|done:|best |test \(|trainable|run folder/;
    for (const b of barLines) {
      assert.match(b, /^nas-lora /, `bar fragment not at the start of its line: ${JSON.stringify(b)}${dump}`);
      assert.doesNotMatch(b.replace(/^nas-lora (warmup|search|fix)? ?/, ''), logText, `bar and log text on one line: ${JSON.stringify(b)}${dump}`);
      assert.ok(b.length < COLS, `bar line as wide as the terminal (${b.length}): ${JSON.stringify(b)}${dump}`);
    }
    assert.ok(screen.filter((s) => s.includes(`${STEPS}/${STEPS} loss`)).length <= 1, `the bar's last state more than once${dump}`);

    // The log lines, each complete on a line of its own, once, in this order.
    const expected: RegExp[] = [
      /^data: \d+ train, \d+ val, \d+ test, \d+ arch$/,
      /^ {2}total +\d+ trainable$/,
      /^stage warmup \(steps 0–\d+\): training [a-z_, ]+$/,
      /^stage search \(steps \d+–\d+\): training [a-z_, ]+alpha$/,
      /^step 10: val dice \d\.\d{4} iou \d\.\d{4} .* weightedF \d\.\d{4}$/,
      /^stage fix: cells discretized: [\w×]+(, [\w×]+)*$/,
      /^stage fix \(steps \d+–30\): training [a-z_, ]+$/,
      /^step 20: val dice \d\.\d{4} .* weightedF \d\.\d{4}$/,
      /^step 30: val dice \d\.\d{4} .* weightedF \d\.\d{4}$/,
      new RegExp(`^done: ${STEPS} steps in \\d+\\.\\d s; run folder ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`),
      /^best val Dice \d\.\d{4} at step \d+ \(checkpoints\/best\)$/,
      /^test \(at label size 64\): Dice \d\.\d{4}, IoU \d\.\d{4} on \d+ images \(metrics\.json\)$/,
    ];
    let prev = -1;
    for (const re of expected) {
      const at = screen.flatMap((s, i) => (re.test(s) ? [i] : []));
      assert.equal(at.length, 1, `${re}: expected once as a whole line, found ${at.length}${dump}`);
      assert.ok(at[0] > prev, `${re} out of order (line ${at[0]}, previous at ${prev})${dump}`);
      prev = at[0];
    }
    // Lines wider than the terminal (the undecided-cell warnings) wrap and stay whole.
    const warnings = screen.filter((s) => s.startsWith('warning: '));
    for (const w of warnings) assert.match(w, /^warning: \S+ discretized to \w+ with a margin of \d\.\d{3} over the runner-up \(below [\d.]+\): the search did not decide this cell( \(.*\))?$/, `${JSON.stringify(w)}${dump}`);
    // The bar ends before the summary: nothing after `done:` is a bar.
    const done = screen.findIndex((s) => s.startsWith('done: '));
    assert.ok(screen.slice(done).every((s) => !isBar(s)), `a bar after the summary${dump}`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test(`an error while the bar runs starts on a line of its own`, { skip: hasScript ? false : 'no util-linux script' }, async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-tty-'));
  try {
    // A learning rate that blows the weights up: the periodic evaluation then fails with the bar live.
    const { bytes, status } = runInPty(work, ['--set', 'optim.lr=1e30', '--set', 'optim.grad_clip=null']);
    const screen = await render(bytes);
    const dump = `\n--- final screen (${screen.length} lines) ---\n${screen.join('\n')}\n---`;
    assert.notEqual(status, 0, dump);
    const err = screen.filter((s) => s.includes('naslora: '));
    assert.equal(err.length, 1, dump);
    assert.match(err[0]!, /^naslora: \S/, `the error shares its line with the bar${dump}`);
    assert.doesNotMatch(err[0]!, /[█░]/, dump);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});
