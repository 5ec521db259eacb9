// JSON-lines files (events.jsonl, alpha_history.jsonl): appended a line at a time, so a kill
// mid-write leaves at most a torn last line with no newline after it. That line is skipped and said;
// a bad line anywhere else, or a line that is not a JSON object, is an error naming file and line.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The file's objects in order; `onTorn` hears about a skipped torn last line. */
export function readJsonLines<T>(file: string, onTorn: (note: string) => void = () => undefined): T[] {
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  const out: T[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line.trim()) continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      const last = lines.slice(i + 1).every((l) => !l.trim());
      if (last && !text.endsWith('\n')) {
        onTorn(`${path.basename(file)}: the last line is incomplete (written while the run was killed or still running) and was skipped`);
        continue;
      }
      throw new Error(`${file}: line ${i + 1} is not valid JSON (${(e as Error).message}); the file is corrupt`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${file}: line ${i + 1} is not a JSON object; the file is corrupt`);
    out.push(v as T);
  }
  return out;
}
