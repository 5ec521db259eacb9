// The run directory: resolved config, JSON-lines events, α history, derived ops, metrics, and
// checkpoints (`checkpoints/last`, `checkpoints/best`) that are swapped in whole, so a kill at any
// moment leaves either the old or the new checkpoint, never a mix.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { readJsonLines } from '../io/jsonl.js';

export class RunDir {
  /** write false: every write is skipped (data-parallel ranks other than 0 only read the folder). */
  readonly write: boolean;
  constructor(readonly root: string, o: { write?: boolean } = {}) {
    this.write = o.write ?? true;
    if (this.write) fs.mkdirSync(path.join(root, 'checkpoints'), { recursive: true });
  }

  file(name: string): string { return path.join(this.root, name); }

  /** Appends one JSON line (events.jsonl, alpha_history.jsonl); a partial last line is ignored on read. */
  append(name: string, obj: object): void {
    if (!this.write) return;
    fs.appendFileSync(this.file(name), JSON.stringify(obj) + '\n');
  }

  writeJson(name: string, obj: unknown): void {
    if (!this.write) return;
    writeFileAtomic(this.file(name), JSON.stringify(obj, null, 2) + '\n');
  }

  /** A JSON-lines file of the run ([] if absent); a line torn by a kill mid-write is skipped. */
  readJsonLines<T>(name: string): T[] {
    return fs.existsSync(this.file(name)) ? readJsonLines<T>(this.file(name)) : [];
  }

  /** Drops event lines written after `step` (they belong to work a resumed run redoes). */
  truncateEvents(name: string, keep: (e: { step?: number }) => boolean): void {
    if (!this.write) return;
    const lines = this.readJsonLines<{ step?: number }>(name).filter(keep);
    writeFileAtomic(this.file(name), lines.map((l) => JSON.stringify(l) + '\n').join(''));
  }

  checkpointDir(name: 'last' | 'best'): string { return path.join(this.root, 'checkpoints', name); }

  /** Writes a checkpoint into a fresh folder, then swaps it in place of the old one. */
  writeCheckpoint(name: 'last' | 'best', write: (dir: string) => void): void {
    if (!this.write) return;
    const final = this.checkpointDir(name);
    const tmp = `${final}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    write(tmp);
    const old = `${final}.old-${process.pid}`;
    if (fs.existsSync(final)) fs.renameSync(final, old);
    fs.renameSync(tmp, final);
    fs.rmSync(old, { recursive: true, force: true });
  }

  /** The newest complete checkpoint folder, recovering from a kill between the two renames. */
  findCheckpoint(name: 'last' | 'best'): string | null {
    const final = this.checkpointDir(name);
    if (fs.existsSync(path.join(final, 'trainer_state.json'))) return final;
    const dir = path.dirname(final);
    const old = fs.readdirSync(dir).filter((f) => f.startsWith(`${name}.old-`)).map((f) => path.join(dir, f));
    for (const o of old) if (fs.existsSync(path.join(o, 'trainer_state.json'))) return o;
    return null;
  }
}
