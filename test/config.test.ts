// Run-config tests: presets, YAML loading, overrides, and human-readable validation errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ConfigError, PRESETS, PRESET_NAMES, configToYaml, effectiveArchFrac, loadConfig, parseConfig, saveConfig,
} from '../src/train/config.js';

const DIR = ['data.dir=/data/kvasir'];

function yamlFile(text: string): string {
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-cfg-')), 'run.yaml');
  fs.writeFileSync(f, text);
  return f;
}

/** Runs f, expects a ConfigError, returns its problem lines. */
function problems(f: () => unknown): string[] {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.problems;
  }
  assert.fail('expected a ConfigError');
}

test('presets are complete and valid once data is set', () => {
  for (const name of PRESET_NAMES) {
    const c = loadConfig(name, DIR);
    assert.equal(c.method.name, name);
    const raw = PRESETS[name]();
    assert.deepEqual(parseConfig({ ...raw, data: { ...raw.data, dir: '/d' } }, name).method, raw.method);
  }
  const n = loadConfig('nas-lora', DIR);
  assert.deepEqual(n.schedule.stages.map((s) => [s.name, s.share, s.optimize_alpha, s.discretize_at_entry]), [
    ['warmup', 0.2, false, false],
    ['search', 0.4, true, false],
    ['fix', 0.4, false, true],
  ]);
  assert.deepEqual(n.schedule.alpha_optim, { lr: 3e-3, betas: [0.5, 0.999], weight_decay: 1e-3, mode: 'joint', travel: 20 });
  assert.equal(n.optim.lr, 1e-4);
  assert.equal(n.optim.grad_clip, 1);
  assert.equal(n.data.batch_size * n.optim.grad_accum, 4);
  assert.equal(n.data.resize, 'squash');
  assert.equal(n.method.ops.includes('zero'), false);
  assert.equal(effectiveArchFrac(n), 0, 'joint mode uses no arch split');
  assert.equal(loadConfig('lora', DIR).schedule.stages.length, 1);
  assert.deepEqual(loadConfig('decoder-only', DIR).schedule.stages[0]!.train, ['decoder']);
  assert.equal(loadConfig('nas-pc-lora', DIR).method.pc_k, 2);
});

test('a preset without data says what is missing', () => {
  const p = problems(() => loadConfig('nas-lora'));
  assert.equal(p.length, 1);
  assert.match(p[0]!, /^data\.dir: required/);
});

test('overrides: types, string fields, list indices, whole objects', () => {
  const c = loadConfig('nas-lora', [
    ...DIR, 'optim.lr=3e-4', 'model.checkpoint=123', 'data.augment.crop_scale=[0.7, 1]',
    'schedule.stages.1.share=0.5', 'schedule.stages.2.share=0.3', 'train.epochs=null', 'train.steps=500',
  ]);
  assert.equal(c.optim.lr, 3e-4);
  assert.equal(c.model.checkpoint, '123');
  assert.deepEqual(c.data.augment.crop_scale, [0.7, 1]);
  assert.equal(c.train.steps, 500);
  const s = loadConfig('lora', ['data.synthetic={kind: target, n: 8, size: 32, seed: 1}']);
  assert.deepEqual(s.data.synthetic, { kind: 'target', n: 8, size: 32, seed: 1 });
  // alternate mode resolves the search stage to the arch split, and the arch split is then carved.
  const a = loadConfig('nas-lora', [...DIR, 'schedule.alpha_optim.mode=alternate']);
  assert.equal(a.schedule.stages[1]!.alpha_split, 'arch');
  assert.equal(effectiveArchFrac(a), 0.15);
});

test('bad override paths name the path and list valid keys', () => {
  const [p] = problems(() => loadConfig('nas-lora', [...DIR, 'optim.bogus=1']));
  assert.match(p!, /optim\.bogus=1.*unknown key 'bogus' under optim \(valid keys: name, lr, weight_decay, betas/);
  const [q] = problems(() => loadConfig('nas-lora', [...DIR, 'nope.x=1']));
  assert.match(q!, /unknown key 'nope' under \(top level\) \(valid keys: model, data, method/);
  assert.match(problems(() => loadConfig('nas-lora', [...DIR, 'data.synthetic.n=3']))[0]!, /data\.synthetic is null; set it as a whole/);
  assert.match(problems(() => loadConfig('nas-lora', [...DIR, 'optim.lr']))[0]!, /expected key\.path=value/);
  assert.match(problems(() => loadConfig('nas-lora', [...DIR, 'schedule.stages.5.share=1']))[0]!, /index 5 out of range \(schedule\.stages has 3 items\)/);
});

test('YAML: unknown keys and wrong types, one line per problem with its path', () => {
  const f = yamlFile('preset: nas-lora\ndata:\n  dir: /d\n  foo: 1\noptim:\n  lr: fast\nmethod:\n  rank: 0\n');
  const p = problems(() => loadConfig(f));
  assert.equal(p.length, 3, p.join('\n'));
  assert.ok(p.some((l) => /^data\.foo: unknown key \(valid keys: dir, mask_suffix, synthetic, splits/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => /^optim\.lr: .*expected number/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => /^method\.rank: /.test(l)), p.join('\n'));
  const e = (() => { try { loadConfig(f); } catch (x) { return x as Error; } return null; })();
  assert.match(e!.message, /^invalid config \(.*run\.yaml\):\n {2}/);
});

test('YAML base: preset key, else method.name; deep merge', () => {
  const a = loadConfig(yamlFile('preset: lora\ndata: {dir: /d}\nmethod: {rank: 8}\n'));
  assert.equal(a.method.name, 'lora');
  assert.equal(a.method.rank, 8);
  assert.equal(a.method.lora_alpha, 32);
  const b = loadConfig(yamlFile('data: {dir: /d}\nmethod: {name: conv-lora}\n'));
  assert.deepEqual(b.schedule.stages.map((s) => s.name), ['train']);
  assert.match(problems(() => loadConfig(yamlFile('preset: nope\n')))[0]!, /unknown preset 'nope'/);
  assert.match(problems(() => loadConfig('/no/such/file.yaml'))[0]!, /neither a config file nor a preset/);
});

test('cross-field rules', () => {
  const lines = problems(() =>
    loadConfig('lora', [...DIR, 'schedule.stages.0.optimize_alpha=true', 'schedule.stages.0.share=0.9', 'train.steps=10']),
  );
  assert.ok(lines.some((l) => l.startsWith("schedule.stages.0.optimize_alpha: method 'lora' has no architecture weights")), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('schedule.stages: shares sum to 0.9')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('train.epochs: set exactly one')), lines.join('\n'));
  assert.match(problems(() => loadConfig('nas-lora', [...DIR, 'schedule.stages.1.alpha_split=arch']))[0]!, /^schedule\.stages\.1\.alpha_split: joint mode/);
  assert.match(problems(() => loadConfig('nas-lora', [...DIR, 'method.targets=(']))[0]!, /^method\.targets: not a valid regular expression/);
  assert.match(problems(() => loadConfig('nas-lora', [...DIR, 'model.checkpoint=null']))[0]!, /^model\.checkpoint: required/);
  // model.config defaults to null (the checkpoint's own configuration); building from scratch needs one.
  assert.match(problems(() => loadConfig('nas-lora', [...DIR, 'model.checkpoint=null', 'model.pretrained=none']))[0]!, /^model\.config: required when model\.pretrained=none/);
  assert.equal(loadConfig('nas-lora', [...DIR, 'model.checkpoint=null', 'model.pretrained=none', 'model.config=vit_b']).model.pretrained, 'none');
  assert.match(problems(() => loadConfig('lora', [...DIR, 'eval.metrics=[iou, mae]']))[0]!, /^eval\.metrics: must include 'dice'/);
  assert.match(problems(() => loadConfig('lora', [...DIR, 'data.mode=prompted', 'eval.resolution=original']))[0]!, /^eval\.resolution: 'original' scores prompt-free models/);
  assert.match(problems(() => loadConfig('nas-lora', [...DIR, 'method.ops=[skip, skip]']))[0]!, /^method\.ops: lists an op twice/);
});

test('saved config reloads to the same config', () => {
  const c = loadConfig('nas-pc-lora', [...DIR, 'optim.lr=2e-4']);
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-cfg-')), 'resolved.yaml');
  saveConfig(f, c);
  assert.deepEqual(loadConfig(f), c);
  assert.match(configToYaml(c), /name: nas-pc-lora/);
});
