"""PyTorch twin of the per-step rows of bench/train.ts: one training step of prompt-free SAM
(test/py/sam_ref.py) with adapters (bench/torch_adapter_layers.py) on the same small configuration,
batch, loss (structure + Conv-LoRA aux), gradient clipping and optimizers (AdamW; α's own Adam in the
search stage), the same thread count. One method per process, so ru_maxrss is that method's peak.

Prints {"<row name>": median ms, "<row name>:maxrss_mb": peak RSS}."""
import argparse, json, math, os, resource, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import torch.nn.functional as F
import torch_adapter_layers as tal
from torch_adapter_layers import sam_ref

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, default=1)
p.add_argument('--name', required=True)
p.add_argument('--method', required=True)
p.add_argument('--variant', default='train', choices=['train', 'warmup', 'search', 'fix'])
p.add_argument('--fix-op', default='conv_3x3')
p.add_argument('--config', required=True, help='SAM config as JSON')
p.add_argument('--rank', type=int, default=3)
p.add_argument('--lora-alpha', type=float, default=32)
p.add_argument('--batch', type=int, default=4)
p.add_argument('--steps', type=int, default=15)
p.add_argument('--warmup', type=int, default=3)
a = p.parse_args()
torch.set_num_threads(a.threads)

cfg = json.loads(a.config)
torch.manual_seed(0)
sam = sam_ref.build(cfg)
layers = tal.inject(sam.image_encoder, a.method, a.rank, a.lora_alpha)
tal.set_cycled_routing(layers)
if a.variant == 'fix':
    for l in layers:
        l.cell.discretize(a.fix_op)
parts = {'decoder-only': ['decoder'], 'lora': ['lora', 'decoder']}.get(a.method, ['lora', 'ops', 'decoder'])
if a.variant == 'search':
    parts = parts + ['alpha']
tal.set_trainable(sam, layers, parts)
sam.train()
alphas = [l.cell.alpha for l in layers if isinstance(l, tal.NasLayer) and l.cell.alpha.requires_grad]
weights = [q for q in sam.parameters() if q.requires_grad and not any(q is x for x in alphas)]
opt = torch.optim.AdamW(weights, lr=1e-4, weight_decay=1e-4, betas=(0.9, 0.999), eps=1e-8)
alpha_opt = torch.optim.Adam(alphas, lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3) if alphas else None

S = cfg['img_size']
torch.manual_seed(1)
images = torch.randn(a.batch, 3, S, S)
yy, xx = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing='ij')
masks = torch.stack([((yy - S * (0.3 + 0.1 * i)) ** 2 + (xx - S * 0.5) ** 2 < (S * 0.25) ** 2).float()
                     for i in range(a.batch)])[:, None]


def step():
    opt.zero_grad(set_to_none=True)
    if alpha_opt:
        alpha_opt.zero_grad(set_to_none=True)
    out = F.interpolate(tal.segment_logits(sam, images), size=(S, S), mode='bilinear', align_corners=False)
    loss = tal.structure_loss(out, masks)
    aux = tal.aux_loss(layers)
    if aux is not None:
        loss = loss + aux
    loss.backward()
    loss.item()
    torch.nn.utils.clip_grad_norm_(weights, 1.0)
    opt.step()
    if alpha_opt:
        alpha_opt.step()


for _ in range(a.warmup):
    step()
ts = []
for _ in range(a.steps):
    t0 = time.perf_counter()
    step()
    ts.append((time.perf_counter() - t0) * 1000)
print(json.dumps({a.name: statistics.median(ts), a.name + ':maxrss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
