// Module: named parameters, buffers and children, as in torch.nn.Module, so that state-dict names
// match PyTorch's exactly (checkpoints load by name).
import { markPlaced, noGrad, Tensor, type Device } from '../tensor.js';

export abstract class Module {
  training = true;
  readonly #params = new Map<string, Tensor>();
  readonly #buffers = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();

  /** Registers (or replaces) a trainable parameter; it lives until the module is disposed. */
  protected param(name: string, t: Tensor): Tensor {
    t.keep();
    t.requiresGrad = true;
    this.#params.get(name)?.dispose();
    this.#params.set(name, t);
    return t;
  }

  /** Registers a non-trainable state tensor (saved in the state dict). */
  protected buffer(name: string, t: Tensor): Tensor {
    t.keep();
    this.#buffers.get(name)?.dispose();
    this.#buffers.set(name, t);
    return t;
  }

  protected child<M extends Module>(name: string, m: M): M {
    this.#children.set(name, m);
    return m;
  }

  /** Replaces a registered child (used by adapters that wrap a layer). */
  replaceChild(name: string, m: Module): void {
    if (!this.#children.has(name)) throw new Error(`${this.constructor.name} has no child '${name}'`);
    this.#children.set(name, m);
  }

  getParam(name: string): Tensor | undefined { return this.#params.get(name); }
  getChild(name: string): Module | undefined { return this.#children.get(name); }
  children(): Array<[string, Module]> { return [...this.#children.entries()]; }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [n, c] of this.#children) yield* c.namedModules(prefix ? `${prefix}.${n}` : n);
  }

  namedParameters(prefix = ''): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [p, m] of this.namedModules(prefix)) {
      for (const [n, t] of m.#params) out.push([p ? `${p}.${n}` : n, t]);
    }
    return out;
  }

  parameters(): Tensor[] { return this.namedParameters().map(([, t]) => t); }

  namedBuffers(prefix = ''): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [p, m] of this.namedModules(prefix)) {
      for (const [n, t] of m.#buffers) out.push([p ? `${p}.${n}` : n, t]);
    }
    return out;
  }

  /** Parameters and buffers by their PyTorch state-dict names (the tensors themselves, not copies). */
  stateDict(): Map<string, Tensor> {
    return new Map([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /**
   * Copies values into parameters/buffers by name. strict: every name must match both ways.
   * Shape mismatches always fail, naming the tensor, before anything is copied.
   */
  loadStateDict(sd: Map<string, Tensor>, strict = true): { missing: string[]; unexpected: string[] } {
    const own = this.stateDict();
    const missing = [...own.keys()].filter((k) => !sd.has(k));
    const unexpected = [...sd.keys()].filter((k) => !own.has(k));
    if (strict && (missing.length || unexpected.length)) {
      throw new Error(
        `state dict does not match the model:` +
          (missing.length ? ` missing ${missing.length} (${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', …' : ''})` : '') +
          (unexpected.length ? ` unexpected ${unexpected.length} (${unexpected.slice(0, 8).join(', ')}${unexpected.length > 8 ? ', …' : ''})` : ''),
      );
    }
    const bad: string[] = [];
    for (const [k, t] of own) {
      const src = sd.get(k);
      if (src && src.shape.join(',') !== t.shape.join(',')) bad.push(`${k}: checkpoint [${src.shape}] vs model [${t.shape}]`);
    }
    if (bad.length) throw new Error(`shape mismatch: ${bad.join('; ')}`);
    noGrad(() => {
      for (const [k, t] of own) {
        const src = sd.get(k);
        if (src) t.copy_(src);
      }
    });
    return { missing, unexpected };
  }

  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }
  eval(): this { return this.train(false); }

  /** Sets requiresGrad on every parameter of this module. */
  requiresGrad_(on: boolean): this {
    for (const p of this.parameters()) p.requiresGrad = on;
    return this;
  }

  numParameters(trainableOnly = false): number {
    let n = 0;
    for (const p of this.parameters()) if (!trainableOnly || p.requiresGrad) n += p.numel;
    return n;
  }

  /**
   * Tensors a module holds outside its parameters and buffers that must live on the module's device
   * (e.g. SAM's pixel statistics, a cell's re-parameterized kernel); moved by to().
   */
  protected deviceTensors(): Tensor[] { return []; }

  /** The device of the first parameter (or buffer); 'cpu' for a module without tensors. */
  get device(): string {
    for (const [, m] of this.namedModules()) {
      for (const t of m.#params.values()) return t.device;
      for (const t of m.#buffers.values()) return t.device;
    }
    return 'cpu';
  }

  /**
   * Moves every parameter, buffer (and their gradients) and deviceTensors() of this tree to `device`
   * in place: the tensors keep their identity (as `p.data = p.data.to(device)`), so references held
   * by layers, optimizers and adapters stay valid. Tensors already there are left alone.
   */
  to(device: Device): this {
    const seen = new Set<Tensor>();
    const move = (t: Tensor | null): void => {
      if (!t || t.isDisposed || seen.has(t)) return;
      seen.add(t);
      markPlaced(t);  // the device audit's record (tests): this tensor is on the run's device
      if (t.device === device) return;
      noGrad(() => {
        const moved = t.to(device);
        t.setData(moved);
        moved.dispose();
        const g = t.grad;
        if (g) {
          if (g.device !== device) {
            const mg = g.to(device);
            t.grad = mg;
            mg.dispose();
          }
          g.dispose();
        }
      });
    };
    for (const [, m] of this.namedModules()) {
      for (const t of m.#params.values()) move(t);
      for (const t of m.#buffers.values()) move(t);
      for (const t of m.deviceTensors()) move(t);
    }
    return this;
  }

  /** Frees every parameter and buffer of this module tree. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const t of m.#params.values()) t.dispose();
      for (const t of m.#buffers.values()) t.dispose();
    }
  }
}

/** An indexed list of modules, named '0', '1', … like nn.ModuleList. */
export class ModuleList<M extends Module = Module> extends Module {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => this.child(String(i), m));
  }
  get length(): number { return this.items.length; }
  at(i: number): M { return this.items[i]; }
  override replaceChild(name: string, m: Module): void {
    super.replaceChild(name, m);
    this.items[Number(name)] = m as M;
  }
}

/** Modules by name, like nn.ModuleDict (state-dict names are '<key>.<param>'). */
export class ModuleDict<M extends Module = Module> extends Module {
  readonly items = new Map<string, M>();
  constructor(entries: Array<[string, M]>) {
    super();
    for (const [k, m] of entries) {
      this.items.set(k, m);
      this.child(k, m);
    }
  }
  get(k: string): M | undefined { return this.items.get(k); }
}

/** A module without parameters, for parameter-free operations kept in a ModuleDict. */
export class Empty extends Module {}
