// The architecture search's own mechanics, step by step, for the trainer (and for tests that drive
// cells without a whole SAM): α's learning rate from the search length, the Gumbel temperature,
// progressive shrinking, β-Decay regularisation, early discretisation, and discretisation with its
// margin, warning and the cheap fold of per-token cells.
import type { Tensor } from '../engine/index.js';
import type { MixedCell, NasBranch } from '../adapters/index.js';
import type { RunConfig, StageConfig } from './config.js';

export interface StagePlan { stage: StageConfig; start: number; end: number }

/** Stage boundaries in steps from their shares. */
export function planStages(stages: StageConfig[], total: number): StagePlan[] {
  let acc = 0;
  return stages.map((s, i) => {
    const start = Math.round(acc * total);
    acc += s.share;
    const end = i === stages.length - 1 ? total : Math.round(acc * total);
    return { stage: s, start, end };
  });
}

export interface SearchCell { path: string; cell: MixedCell; branch: NasBranch }

export interface Discretized { step: number; op: string; margin: number; weights: Record<string, number>; early: boolean; folded: boolean }

/** What a resumed run needs to continue the search exactly. */
export interface SearchState {
  /** Early discretisation: per cell, the arg-max op and for how many search steps it has been stable and confident. */
  stable: Record<string, { op: string; n: number }>;
  /** Per cell: the step it was discretised at, softmax(α) then, and the winner's margin over the runner-up. */
  discretized: Record<string, Discretized>;
}

export type SearchEvent =
  | { type: 'shrink'; step: number; keep: number; dropped: Record<string, string[]> }
  | { type: 'discretize'; step: number; cell: string; op: string; margin: number; early: boolean; folded: boolean };

export class NasSearch {
  /** Steps with optimize_alpha, and the span from the first such step to the last. */
  readonly steps: number;
  readonly start: number;
  readonly end: number;
  /** travel ÷ search steps when alpha_optim.travel is set: Adam moves α by about lr per step whatever the gradient's scale. */
  readonly alphaLr: number;
  readonly shrinks: Array<{ step: number; keep: number }>;
  state: SearchState = { stable: {}, discretized: {} };
  private readonly se: RunConfig['schedule']['search'];

  constructor(cfg: RunConfig, plan: StagePlan[], readonly cells: SearchCell[], private readonly onEvent: (e: SearchEvent, msg: string) => void = () => undefined) {
    this.se = cfg.schedule.search;
    const sp = plan.filter((q) => q.stage.optimize_alpha);
    this.steps = sp.reduce((a, q) => a + q.end - q.start, 0);
    this.start = sp.length ? sp[0].start : 0;
    this.end = sp.length ? sp[sp.length - 1].end : 0;
    const travel = cfg.schedule.alpha_optim.travel;
    this.alphaLr = travel !== null && this.steps > 0 ? travel / this.steps : cfg.schedule.alpha_optim.lr;
    this.shrinks = this.se.shrink.map((r) => ({ step: this.start + Math.round(r.at * (this.end - this.start)), keep: r.keep }));
    for (const { cell } of cells) cell.sampling = this.se.sampling;
  }

  describe(): string {
    return `${this.se.sampling} over ${this.steps} steps (${this.start}–${this.end}), α lr ${+this.alphaLr.toPrecision(4)}`;
  }

  /** Gumbel temperature: the first value up to the search, linear to the second over it. */
  tau(step: number): number {
    const [t0, t1] = this.se.tau;
    if (this.end <= this.start || step <= this.start) return t0;
    return step >= this.end ? t1 : t0 + ((t1 - t0) * (step - this.start)) / (this.end - this.start);
  }

  /** Before step `step`: sets τ and applies a shrink point that falls on this step. */
  beforeStep(step: number): void {
    for (const { cell } of this.cells) cell.tau = this.tau(step);
    for (const sh of this.shrinks) {
      if (sh.step !== step) continue;
      const dropped = Object.fromEntries(this.cells.map((c) => [c.path, c.cell.shrink(sh.keep)] as const).filter(([, d]) => d.length));
      this.onEvent({ type: 'shrink', step, keep: sh.keep, dropped }, `step ${step}: search shrunk to ${sh.keep} ops per cell`);
    }
  }

  /** β-Decay (Ye et al., CVPR 2022): weight·Σ logsumexp(α) over the cells still searching; its α-gradient is weight·softmax(α). */
  regularizer(scale = 1): Tensor | null {
    if (this.se.beta_decay === 0) return null;
    let r: Tensor | null = null;
    for (const { cell } of this.cells) {
      if (cell.derived) continue;
      const t = cell.logits().logsumexp(0);
      r = r ? r.add(t) : t;
    }
    return r ? r.mul(this.se.beta_decay * scale) : null;
  }

  /** After a search step's update (`done` steps finished): discretises cells that have stayed decided. */
  afterSearchStep(done: number): boolean {
    const ed = this.se.early_discretize;
    if (!ed) return false;
    let changed = false;
    for (const c of this.cells) {
      if (c.cell.derived) continue;
      const all = c.cell.weights();
      const w = all.filter((_, i) => c.cell.active[i]);
      // Entropy normalised by its maximum (log of the active op count): 1 = uniform, 0 = one op.
      const h = w.length > 1 ? -w.reduce((a, x) => a + (x > 0 ? x * Math.log(x) : 0), 0) / Math.log(w.length) : 0;
      const op = c.cell.candidates[all.indexOf(Math.max(...all))].name;
      const prev = this.state.stable[c.path];
      const n = h < ed.entropy ? (prev && prev.op === op ? prev.n + 1 : 1) : 0;
      this.state.stable[c.path] = { op, n };
      if (n >= ed.patience) {
        this.discretize(c, done, true, ` (normalised entropy ${h.toFixed(3)} for ${n} steps)`);
        changed = true;
      }
    }
    return changed;
  }

  /** Discretises every cell still searching (the fix stage's entry). */
  discretizeAll(step: number): void {
    for (const c of this.cells) if (!c.cell.derived) this.discretize(c, step, false, '');
  }

  private discretize(c: SearchCell, step: number, early: boolean, why: string): void {
    const weights = c.cell.searchWeights();
    const margin = c.cell.margin();
    const w = Object.values(weights);
    const argmax = c.cell.candidates[w.indexOf(Math.max(...w))].name;
    const op = c.cell.discretize(this.se.tie_margin);
    if (op !== argmax) why += ` (cheapest within ${this.se.tie_margin} of ${argmax})`;
    const folded = this.se.fold_fix && c.branch.fold();
    this.state.discretized[c.path] = { step, op, margin, weights, early, folded };
    const warn = margin < this.se.warn_margin
      ? `warning: ${c.path} discretized to ${op} with a margin of ${margin.toFixed(3)} over the runner-up (below ${this.se.warn_margin}): the search did not decide this cell${why}`
      : `step ${step}: ${c.path} discretized${early ? ' early' : ''} to ${op}, margin ${margin.toFixed(3)}${folded ? ', folded into lora_B' : ''}${why}`;
    this.onEvent({ type: 'discretize', step, cell: c.path, op, margin, early, folded }, warn);
  }

  /** Discretised cells keep α and the unused ops frozen whatever a stage trains; folded ones all their ops. */
  refreeze(): void {
    for (const { cell, branch } of this.cells) {
      if (cell.derived) cell.discretize();
      if (branch.folded) cell.requiresGrad_(false);
    }
  }

  /** derived_ops.json: per cell the derived op (or the current weights while searching), and how it was decided. */
  record(step: number, stage: string): object {
    return {
      step, stage,
      derived: Object.fromEntries(this.cells.map(({ path, cell }) => [path, cell.derived ?? cell.describe().weights])),
      cells: this.state.discretized,
    };
  }
}
