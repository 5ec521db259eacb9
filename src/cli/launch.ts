// `--nproc N` / `--nnodes M --node-rank K --master-addr HOST --master-port P`: torchrun's launcher,
// for naslora's own commands. This process starts N workers of the same command on this machine
// with torchrun's variables (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) and waits. Rank 0's output is passed through; the others' lines are prefixed.
// When a worker fails, the launcher names it, gives the others the collective timeout to stop
// on their own (they report the lost rank), then ends them.
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as os from 'node:os';
import type { Command } from 'commander';

export interface LaunchOptions {
  nproc?: string;
  nnodes?: string;
  nodeRank?: string;
  masterAddr?: string;
  masterPort?: string;
  distTimeout?: string;
  bucketMb?: string;
}

const LAUNCH_FLAGS = ['--nproc', '--nnodes', '--node-rank', '--master-addr', '--master-port'];

export function addLaunchOptions(cmd: Command): Command {
  return cmd
    .option('--nproc <n>', 'data-parallel: worker processes on this machine (each gets data.batch_size ÷ world size per batch)')
    .option('--nnodes <m>', 'data-parallel: machines taking part (default 1); with --node-rank, --master-addr, --master-port')
    .option('--node-rank <k>', 'this machine\'s index, 0..nnodes-1 (node 0 hosts the rendezvous)')
    .option('--master-addr <host>', 'address of node 0 (default 127.0.0.1; MASTER_ADDR works too)')
    .option('--master-port <port>', 'rendezvous port on node 0 (default: a free port with one node; MASTER_PORT works too)')
    .option('--dist-timeout <s>', 'seconds a collective may wait for a peer before the run stops with an error naming it (default 60)')
    .option('--bucket-mb <mb>', 'gradient allreduce bucket size in MB (default 25)');
}

/** True in a worker started by --nproc (or torchrun) whose rank is not 0: it computes and stays quiet. */
export function isSecondaryRank(): boolean {
  return Number(process.env.WORLD_SIZE ?? '1') > 1 && (process.env.RANK ?? '0') !== '0';
}

function posInt(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got '${v}'`);
  return n;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** The command line without the launcher's own flags (the workers run the command itself). */
export function workerArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const flag = LAUNCH_FLAGS.find((f) => a === f || a.startsWith(`${f}=`));
    if (!flag) { out.push(a); continue; }
    if (a === flag) i++;  // skip its value
  }
  return out;
}

/**
 * Starts the workers when --nproc/--nnodes ask for more than one process and this is not already
 * a worker; resolves to the exit code (the caller exits with it), or null to run here.
 */
export async function maybeLaunch(o: LaunchOptions): Promise<number | null> {
  if (process.env.NASLORA_WORKER === '1') return null;
  const nproc = posInt('--nproc', o.nproc, 1);
  const nnodes = posInt('--nnodes', o.nnodes, 1);
  if (nproc * nnodes === 1) return null;
  const nodeRank = o.nodeRank === undefined ? 0 : Number(o.nodeRank);
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new Error(`--node-rank must be in 0..${nnodes - 1}, got '${o.nodeRank}'`);
  const masterAddr = o.masterAddr ?? process.env.MASTER_ADDR ?? '127.0.0.1';
  let port = o.masterPort ?? process.env.MASTER_PORT;
  if (port === undefined) {
    if (nnodes > 1) throw new Error('--nnodes > 1 needs --master-port (the same on every node)');
    port = String(await freePort());
  }
  posInt('--master-port', port, 1);
  const timeoutS = o.distTimeout === undefined ? 60 : Number(o.distTimeout);
  if (!(timeoutS > 0)) throw new Error(`--dist-timeout must be a positive number of seconds, got '${o.distTimeout}'`);
  if (o.bucketMb !== undefined && !(Number(o.bucketMb) > 0)) throw new Error(`--bucket-mb must be a positive number, got '${o.bucketMb}'`);
  const world = nproc * nnodes;
  // Each worker gets its share of the cores for libtorch's intra-op threads, unless told otherwise.
  const threads = process.env.NASLORA_THREADS ?? String(Math.max(1, Math.floor(os.availableParallelism() / nproc)));
  const argv = workerArgv(process.argv.slice(1));
  const children: Array<{ rank: number; child: ChildProcess; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }> = [];
  for (let local = 0; local < nproc; local++) {
    const rank = nodeRank * nproc + local;
    const child = spawn(process.execPath, [...process.execArgv, ...argv], {
      env: {
        ...process.env, NASLORA_WORKER: '1', WORLD_SIZE: String(world), RANK: String(rank), LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(nproc),
        MASTER_ADDR: masterAddr, MASTER_PORT: port, NASLORA_THREADS: threads, NASLORA_DIST_TIMEOUT_S: String(timeoutS),
        ...(o.bucketMb !== undefined ? { NASLORA_DIST_BUCKET_MB: o.bucketMb } : {}),
      },
      stdio: rank === 0 ? 'inherit' : ['ignore', 'pipe', 'pipe'],
    });
    if (rank !== 0) {
      for (const [stream, out] of [[child.stdout!, process.stdout], [child.stderr!, process.stderr]] as const) {
        let buf = '';
        stream.setEncoding('utf8');
        stream.on('data', (d: string) => {
          buf += d;
          const lines = buf.split('\n');
          buf = lines.pop()!;
          for (const l of lines) out.write(`[rank ${rank}] ${l}\n`);
        });
        stream.on('end', () => { if (buf) out.write(`[rank ${rank}] ${buf}\n`); });
      }
    }
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    children.push({ rank, child, exit });
  }
  const forward = (sig: NodeJS.Signals) => { for (const c of children) c.child.kill(sig); };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  let status = 0;
  let killer: NodeJS.Timeout | null = null;
  await Promise.all(children.map(async ({ rank, child, exit }) => {
    const { code, signal } = await exit;
    if (code === 0) return;
    if (status === 0) {
      status = 1;
      console.error(`naslora: rank ${rank} (pid ${child.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; the other ranks stop within the ${timeoutS} s collective timeout`);
      killer = setTimeout(() => {
        for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) {
          console.error(`naslora: rank ${c.rank} did not stop within ${timeoutS + 10} s: ending it`);
          c.child.kill('SIGKILL');
        }
      }, (timeoutS + 10) * 1000);
    }
  }));
  if (killer) clearTimeout(killer);
  process.off('SIGINT', forward);
  process.off('SIGTERM', forward);
  return status;
}
