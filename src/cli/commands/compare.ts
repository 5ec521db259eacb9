// `naslora compare`: every method × seed of a compare file, one run after another, then
// compare.json and compare.md in out_dir.
import * as path from 'node:path';
import type { Command } from 'commander';
import { formatCompareMarkdown, planCompare, runCompare, type ComparePlan } from '../../compare/compare.js';
import { checkRun, formatRunCheck } from '../../train/check.js';
import { reportAfter } from './report.js';
import { addLaunchOptions, isSecondaryRank, maybeLaunch, type LaunchOptions } from '../launch.js';
import { addRuntimeOptions, runtimeOverrides, type RuntimeFlags } from '../runtime_options.js';
import { runtimeOf } from '../../train/run.js';

const collect = (v: string, acc: string[]) => [...acc, v];

const EXAMPLE = `
A compare file:

  base: base.yaml        # run config shared by every run (data, model, optim, train budget);
                         # a path relative to the compare file's folder, or an inline mapping;
                         # must not set method.name, train.seed or train.out_dir
  methods:               # a preset name, zero-shot, or {name, preset, set} for a variant
    - zero-shot          # the base checkpoint on the test split, no training
    - decoder-only
    - lora
    - { name: nas-lora-r8, preset: nas-lora, set: { method.rank: 8 } }
  seeds: [0, 1, 2]
  out_dir: runs/compare  # relative to the current folder, like train.out_dir

Each run: the method's preset, base merged over it, the method's set (dotted keys; a mapping value
replaces that whole section, as --set does), --set, then train.seed and train.out_dir. Runs go to
<out_dir>/<method>/seed<k> and are scored on the test split. zero-shot needs model.pretrained=sam
and a checkpoint in base; it is evaluated once per seed (same numbers each time).
Re-running skips finished runs (metrics.json), resumes killed ones (checkpoints/last) and restarts
partial ones without a checkpoint; a run folder made with another config is an error.
Time ratios are against the methods named conv-lora and lora (or the only entry with that preset).`;

export function registerCompare(program: Command): void {
  addRuntimeOptions(addLaunchOptions(program
    .command('compare')
    .description('fair multi-seed comparison: every method × seed with the same data splits, steps, batch and evaluation; writes compare.json and compare.md')
    .requiredOption('-c, --config <compare.yaml>', 'compare file: base (path relative to the compare file, or inline), methods, seeds, out_dir')
    .option('--set <key=value>', 'override a run-config value in every run, after each method\'s set (repeatable); train.seed, train.out_dir and method.name are compare\'s', collect, [])
    .option('--json', 'print {"runs":[...],"methods":[...]} on stdout and nothing else (all progress on stderr)')
    .option('--dry-run', 'validate and resolve everything (every run config, file paths, checkpoint header, data listing, run folders), print the plan, each method\'s resolved config and parameter table, and exit')
    .addHelpText('after', EXAMPLE)))
    .action(async (o: { config: string; set: string[]; json?: boolean; dryRun?: boolean } & LaunchOptions & RuntimeFlags) => {
      const plan = planCompare(o.config, [...o.set, ...runtimeOverrides(o)]);
      if (o.dryRun) {
        process.stdout.write(formatCompareDryRun(plan));
        return;
      }
      for (const r of plan.runs) runtimeOf(r.cfg);  // a device this libtorch cannot give fails before any run
      const launched = await maybeLaunch(o);
      if (launched !== null) { process.exitCode = launched; return; }
      const r = await runCompare(plan);
      if (isSecondaryRank()) return;
      if (o.json) process.stdout.write(JSON.stringify({ runs: r.runs, methods: r.methods }) + '\n');
      else {
        process.stdout.write(formatCompareMarkdown(r));
        console.error(`results: ${path.join(plan.outDir, 'compare.md')}, ${path.join(plan.outDir, 'compare.json')}`);
      }
      await reportAfter(plan.outDir);
    });
}

/** compare --dry-run: the plan, then per method (its first seed) the run check; the first method's config in full, the others' differences. */
export function formatCompareDryRun(plan: ComparePlan): string {
  const out: string[] = [`# compare plan: ${plan.file}`, `${plan.runs.length} run(s) into ${plan.outDir}`];
  for (const r of plan.runs) out.push(`  ${r.method.padEnd(16)} seed ${String(r.seed).padEnd(4)} ${r.state.padEnd(9)} ${r.runDir}`);
  for (const w of plan.warnings) out.push(`note: ${w}`);
  const first = new Map<string, (typeof plan.runs)[number]>();
  for (const r of plan.runs) if (!first.has(r.method)) first.set(r.method, r);
  const flat = (o: unknown, at = '', acc = new Map<string, string>()): Map<string, string> => {
    if (o !== null && typeof o === 'object' && !Array.isArray(o)) for (const [k, v] of Object.entries(o)) flat(v, at ? `${at}.${k}` : k, acc);
    else acc.set(at, JSON.stringify(o));
    return acc;
  };
  let base: Map<string, string> | null = null;
  for (const [name, r] of first) {
    const c = checkRun(r.cfg, { runDir: r.runDir });
    out.push('', `## ${name} (preset ${r.preset}; seed ${r.seed} shown)`);
    const mine = flat(JSON.parse(JSON.stringify(r.cfg)));
    if (!base) {
      base = mine;
      out.push(formatRunCheck(c));
    } else {
      const diff = [...new Set([...mine.keys(), ...base.keys()])].filter((k) => mine.get(k) !== base!.get(k) && k !== 'train.out_dir')
        .map((k) => `  ${k}: ${base!.get(k) ?? '(absent)'} → ${mine.get(k) ?? '(absent)'}`);
      out.push(`# resolved config: as ${[...first.keys()][0]}'s, except${diff.length ? '' : ' nothing'}`, ...diff, '', formatRunCheck(c, { config: false }));
    }
  }
  return out.join('\n') + '\n';
}
