// Every file naslora writes goes through here: write to a temporary file in the same folder,
// fsync, then rename, so that a crash or kill never leaves a half-written file under the real name.
import * as fs from 'node:fs';
import * as path from 'node:path';

export function writeFileAtomic(file: string, chunks: Uint8Array | string | Array<Uint8Array | string>): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const fd = fs.openSync(tmp, 'w');
  try {
    for (const c of Array.isArray(chunks) ? chunks : [chunks]) {
      if (typeof c === 'string') fs.writeSync(fd, c);
      else {
        let off = 0;
        while (off < c.byteLength) off += fs.writeSync(fd, c, off, c.byteLength - off);
      }
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}
