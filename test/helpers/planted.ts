// A task with a planted answer for the architecture search: each of `cells` NAS-LoRA layers must
// learn y = W0·x + B*·T(A*·x) on a token grid, where T is known. With T a 5×5 box blur of the
// r-channel map, only conv_5x5 expresses the residual exactly; with T = a per-token r×r matrix, no
// spatial op is needed. The loop runs the run config's stages (shares, α optimiser, search options)
// through the trainer's own NasSearch, on fresh random tokens each step.
import { Adam, AdamW, F, Linear, clipGradNorm, manualSeed, noGrad, ones, randn, tidy, type Tensor } from '../../src/engine/index.js';
import { NasLoraLayer, type NasBranch } from '../../src/adapters/index.js';
import type { RunConfig } from '../../src/train/config.js';
import { NasSearch, planStages, type Discretized } from '../../src/train/search.js';

export type Planted = 'blur5' | 'per-token';

export interface PlantedResult { derived: string[]; margins: number[]; cells: Record<string, Discretized>; finalLoss: number; sampled: Array<string | null> }

export function runPlanted(cfg: RunConfig, o: { target: Planted; steps: number; cells?: number; seed?: number; lr?: number; channels?: number; grid?: number; batch?: number }): PlantedResult {
  const n = o.cells ?? 4, C = o.channels ?? 16, G = o.grid ?? 8, Bn = o.batch ?? 4, r = cfg.method.rank;
  manualSeed(o.seed ?? 0);
  const layers: NasLoraLayer[] = [];
  const teachers: Array<{ A: Tensor; B: Tensor; M: Tensor }> = [];
  for (let i = 0; i < n; i++) {
    const base = new Linear(C, C);
    base.requiresGrad_(false);
    layers.push(new NasLoraLayer(base, { rank: r, alpha: cfg.method.lora_alpha, dropout: 0, ops: cfg.method.ops, partialChannels: 1, opsInit: cfg.method.ops_init }));
    teachers.push({ A: randn([r, C]).div(Math.sqrt(C)).keep(), B: randn([C, r]).keep(), M: randn([r, r]).div(Math.sqrt(r)).keep() });
  }
  const blur = ones([r, 1, 5, 5]).div(25).keep();
  const T = (z: Tensor, M: Tensor): Tensor => {  // z (B, H, W, r)
    if (o.target === 'per-token') return z.matmul(M);
    return F.conv2d(z.permute(0, 3, 1, 2), blur, null, { padding: 2, groups: r }).permute(0, 2, 3, 1);
  };
  const cells = layers.map((l, i) => ({ path: `layer${i}`, cell: l.cells()[0], branch: l.branches[0] as NasBranch }));
  const plan = planStages(cfg.schedule.stages, o.steps);
  const search = new NasSearch(cfg, plan, cells);
  const weights = layers.flatMap((l) => l.branches.flatMap((b) => b.parameters().filter((p) => p !== (b as NasBranch).cell.alpha)));
  const opt = new AdamW(weights, { lr: o.lr ?? 3e-3, weightDecay: 0, betas: [0.9, 0.999], eps: 1e-8 });
  const alphaOpt = new Adam(cells.map((c) => c.cell.alpha), { lr: search.alphaLr, betas: cfg.schedule.alpha_optim.betas, weightDecay: cfg.schedule.alpha_optim.weight_decay });
  let finalLoss = NaN;
  let entered: string | null = null;
  for (let step = 0; step < o.steps; step++) {
    const p = plan.find((q) => step >= q.start && step < q.end)!;
    if (entered !== p.stage.name) {
      entered = p.stage.name;
      for (const c of cells) c.cell.alpha.requiresGrad = p.stage.optimize_alpha;
      if (p.stage.discretize_at_entry) search.discretizeAll(step);
      search.refreeze();
    }
    manualSeed(1000 + step);
    search.beforeStep(step);
    const searching = p.stage.optimize_alpha;
    finalLoss = tidy(() => {
      let loss: Tensor | null = null;
      layers.forEach((l, i) => {
        const x = randn([Bn, G, G, C]);
        const t = teachers[i];
        const target = noGrad(() => F.linear(x, l.base.weight, l.base.bias).add(T(x.matmul(t.A.transpose(0, 1)), t.M).matmul(t.B.transpose(0, 1))));
        const li = F.mseLoss(l.forward(x), target);
        loss = loss ? loss.add(li) : li;
      });
      const reg = searching ? search.regularizer() : null;
      opt.zeroGrad();
      alphaOpt.zeroGrad();
      (reg ? loss!.add(reg) : loss!).backward();
      clipGradNorm(opt.allParams(), 1.0);
      opt.step();
      if (searching) alphaOpt.step();
      return loss!.item();
    });
    if (searching) search.afterSearchStep(step + 1);
  }
  if (!cells.every((c) => c.cell.derived)) search.discretizeAll(o.steps);
  const res: PlantedResult = {
    derived: cells.map((c) => c.cell.derived!), margins: cells.map((c) => search.state.discretized[c.path].margin),
    cells: search.state.discretized, finalLoss, sampled: cells.map((c) => c.cell.lastSampled),
  };
  for (const l of layers) l.dispose();
  for (const t of teachers) { t.A.dispose(); t.B.dispose(); t.M.dispose(); }
  blur.dispose();
  opt.dispose();
  alphaOpt.dispose();
  return res;
}
