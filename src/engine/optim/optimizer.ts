// Optimizer base: parameter groups with per-group hyper-parameters (changeable between steps) and
// per-parameter state tensors that can be saved and restored exactly.
import { markPlaced, noGrad, tidy, type Device, type Tensor } from '../tensor.js';

export interface ParamGroup<H> { params: Tensor[]; hyper: H; name?: string }
export type GroupInput<H> = Tensor[] | Array<{ params: Tensor[]; name?: string } & Partial<H>>;

/** Plain, serialisable optimizer state: numbers per group and tensors per parameter. */
export interface OptimizerState {
  groups: Array<Record<string, number | number[] | string | undefined>>;
  /** per parameter (in group order), its named state tensors and step count. */
  params: Array<{ step: number; tensors: Record<string, Tensor> }>;
}

export abstract class Optimizer<H extends object> {
  readonly groups: Array<ParamGroup<H>>;
  protected readonly state = new Map<Tensor, { step: number; tensors: Record<string, Tensor> }>();

  constructor(params: GroupInput<H>, defaults: H) {
    type G = { params: Tensor[]; name?: string } & Partial<H>;
    const list: G[] = params.length && !('params' in (params[0] as object)) ? [{ params: params as Tensor[] } as G] : (params as G[]);
    this.groups = list.map((g) => {
      const { params: ps, name, ...rest } = g;
      return { params: ps, name, hyper: { ...defaults, ...(rest as Partial<H>) } };
    });
    const seen = new Set<Tensor>();
    for (const g of this.groups) for (const p of g.params) {
      if (seen.has(p)) throw new Error('a parameter appears in more than one optimizer group');
      seen.add(p);
    }
  }

  /** Updates every parameter that has a gradient. */
  step(): void {
    noGrad(() => {
      for (const g of this.groups) {
        for (const p of g.params) {
          tidy(() => {
            const grad = p.grad;
            if (!grad) return;
            let st = this.state.get(p);
            if (!st) {
              st = { step: 0, tensors: this.initState(p) };
              this.state.set(p, st);
            }
            st.step += 1;
            this.update(p, grad, st.tensors, st.step, g.hyper);
          });
        }
      }
    });
  }

  protected abstract initState(p: Tensor): Record<string, Tensor>;
  protected abstract update(p: Tensor, grad: Tensor, state: Record<string, Tensor>, step: number, h: H): void;

  /** Clears gradients (sets them to none, as set_to_none=True). */
  zeroGrad(): void {
    for (const g of this.groups) for (const p of g.params) p.grad = null;
  }

  allParams(): Tensor[] { return this.groups.flatMap((g) => g.params); }

  /** A snapshot: clones of the state tensors, so later steps do not change it. */
  stateDict(): OptimizerState {
    return {
      groups: this.groups.map((g) => ({ ...(g.hyper as Record<string, number>), name: g.name })),
      params: this.allParams().map((p) => {
        const st = this.state.get(p);
        if (!st) return { step: 0, tensors: {} };
        const tensors: Record<string, Tensor> = {};
        for (const [k, t] of Object.entries(st.tensors)) tensors[k] = t.clone().keep();
        return { step: st.step, tensors };
      }),
    };
  }

  /** Restores a snapshot taken from an optimizer over the same parameter layout. */
  loadStateDict(s: OptimizerState): void {
    const ps = this.allParams();
    if (s.groups.length !== this.groups.length || s.params.length !== ps.length) {
      throw new Error(`optimizer state has ${s.groups.length} groups / ${s.params.length} params, optimizer has ${this.groups.length} / ${ps.length}`);
    }
    s.groups.forEach((g, i) => {
      const { name: _n, ...hyper } = g;
      Object.assign(this.groups[i].hyper, hyper);
    });
    for (const old of this.state.values()) for (const t of Object.values(old.tensors)) t.dispose();
    this.state.clear();
    ps.forEach((p, i) => {
      const e = s.params[i];
      if (e.step === 0) return;
      const tensors: Record<string, Tensor> = {};
      for (const [k, t] of Object.entries(e.tensors)) {
        if (t.shape.join(',') !== p.shape.join(',')) throw new Error(`optimizer state '${k}' of parameter ${i} has shape [${t.shape}], parameter [${p.shape}]`);
        // The state lives with its parameter (a checkpoint is read onto the CPU; the model may be on a GPU).
        const dev = p.device;
        tensors[k] = (t.device === dev ? t.clone() : t.to(dev as Device)).keep();
        markPlaced(tensors[k]);
      }
      this.state.set(p, { step: e.step, tensors });
    });
  }

  /** Frees the optimizer's state tensors. */
  dispose(): void {
    for (const st of this.state.values()) for (const t of Object.values(st.tensors)) t.dispose();
    this.state.clear();
  }
}
