"""PyTorch twin of bench/dist.ts: LoRA training steps of prompt-free SAM (test/py/sam_ref.py with
bench/torch_adapter_layers.py's LoRA on every encoder qkv, the model, loss, clipping and AdamW of
bench/torch_train.py's step_lora) at a fixed global batch, either

  --procs 1: one process, --threads intra-op threads, plain training (no process group), or
  --procs 2: this process starts 2 workers (python <this file> --worker, torchrun's variables in the
             environment), each with --threads intra-op threads, torch.distributed on Gloo over
             127.0.0.1 (GLOO_SOCKET_IFNAME=lo unless set) and DistributedDataParallel (default 25 MB
             buckets, as naslora's default); rank r takes samples [r·b/P, (r+1)·b/P) of every global
             batch, so the averaged gradient is the global batch's.

The same global batch is used for every step (fixed random images, disc masks). Timing as
bench/dist.ts reads naslora's events.jsonl: rank 0 notes the clock after every step; ms per step =
(end of the last step − end of the last warm-up step) ÷ timed steps; the median of the per-step
differences comes along. Prints {"<name>": ms per step, "<name>:median_ms": ...} on the last line.

(bench/common.ts runTorch puts its own --threads first; the --threads given after it wins.)"""
import argparse, json, os, socket, statistics, subprocess, sys, time

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, default=1, help='intra-op threads per process')
p.add_argument('--procs', type=int, default=1, choices=[1, 2])
p.add_argument('--name', required=True)
p.add_argument('--config', required=True, help='SAM config as JSON')
p.add_argument('--rank', type=int, default=3)
p.add_argument('--lora-alpha', type=float, default=32)
p.add_argument('--batch', type=int, default=4, help='global batch')
p.add_argument('--steps', type=int, default=60, help='timed steps')
p.add_argument('--warmup', type=int, default=8)
p.add_argument('--worker', action='store_true', help='(internal) one rank of --procs 2')
a = p.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch():
    """--procs 2: start the ranks and pass rank 0's result line through."""
    env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(free_port()), 'WORLD_SIZE': str(a.procs)}
    env.setdefault('GLOO_SOCKET_IFNAME', 'lo')
    workers = []
    for r in range(a.procs):
        workers.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), *sys.argv[1:], '--worker'],
                                        env={**env, 'RANK': str(r), 'LOCAL_RANK': str(r)},
                                        stdout=subprocess.PIPE if r == 0 else subprocess.DEVNULL, text=True))
    out, _ = workers[0].communicate()
    codes = [w.wait() for w in workers]
    if any(codes):
        sys.exit(f'torch_dist.py: a rank failed (exit codes {codes})')
    print(out.strip().split('\n')[-1])


def run():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F
    import torch_adapter_layers as tal
    from torch_adapter_layers import sam_ref

    torch.set_num_threads(a.threads)  # after sam_ref's import, which sets 1
    world = int(os.environ.get('WORLD_SIZE', '1')) if a.worker else 1
    rank = int(os.environ.get('RANK', '0')) if a.worker else 0
    if world > 1:
        dist.init_process_group('gloo', rank=rank, world_size=world)
    assert a.batch % world == 0, 'the global batch must split evenly over the ranks'

    cfg = json.loads(a.config)
    torch.manual_seed(0)
    sam = sam_ref.build(cfg)
    layers = tal.inject(sam.image_encoder, 'lora', a.rank, a.lora_alpha)
    tal.set_trainable(sam, layers, ['lora', 'decoder'])
    sam.train()

    class Seg(nn.Module):
        """DDP hooks its reducer into forward(): the prompt-free path as a module."""

        def __init__(self, sam):
            super().__init__()
            self.sam = sam

        def forward(self, images):
            return tal.segment_logits(self.sam, images)

    model = Seg(sam)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)  # broadcasts rank 0's weights
    weights = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(weights, lr=1e-4, weight_decay=1e-4, betas=(0.9, 0.999), eps=1e-8)

    S = cfg['img_size']
    torch.manual_seed(1)
    images = torch.randn(a.batch, 3, S, S)
    yy, xx = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing='ij')
    masks = torch.stack([((yy - S * (0.3 + 0.1 * i)) ** 2 + (xx - S * 0.5) ** 2 < (S * 0.25) ** 2).float()
                         for i in range(a.batch)])[:, None]
    per = a.batch // world
    images, masks = images[rank * per:(rank + 1) * per].contiguous(), masks[rank * per:(rank + 1) * per].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        out = F.interpolate(model(images), size=(S, S), mode='bilinear', align_corners=False)
        loss = tal.structure_loss(out, masks)
        loss.backward()  # DDP: the bucketed gradient allreduce (average) overlaps the backward
        loss.item()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        opt.step()

    if world > 1:
        dist.barrier()
    ends = [time.perf_counter()]
    for _ in range(a.warmup + a.steps):
        step()
        ends.append(time.perf_counter())
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        timed = ends[a.warmup:]
        per_step = [(b - x) * 1000 for x, b in zip(timed, timed[1:])]
        print(json.dumps({a.name: (timed[-1] - timed[0]) * 1000 / a.steps, a.name + ':median_ms': statistics.median(per_step)}))


if a.procs > 1 and not a.worker:
    launch()
else:
    run()
