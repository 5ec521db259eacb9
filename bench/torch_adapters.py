"""PyTorch twin of bench/adapters.ts: the same ViT-B-shaped encoder at img 256 (test/py/sam_ref.py),
the same adapters (bench/torch_adapter_layers.py), the same thread count; median ms per row name,
cases of a section timed round-robin as in the TypeScript suite."""
import argparse, json, os, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import torch_adapter_layers as tal
from torch_adapter_layers import sam_ref

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, default=1)
p.add_argument('--train-runs', type=int, default=5)
p.add_argument('--infer-runs', type=int, default=9)
p.add_argument('--layer-runs', type=int, default=15)
p.add_argument('--img', type=int, default=224)
a = p.parse_args()
torch.set_num_threads(a.threads)

RANK, LORA_ALPHA, EXPERTS = 4, 8, 8
CFG = dict(img_size=a.img, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, window_size=14,
           global_attn_indexes=[2, 5, 8, 11], prompt_embed_dim=256, mask_in_chans=16, decoder_depth=2,
           decoder_mlp_dim=2048, decoder_heads=8, iou_head_hidden_dim=256)
PARTS = {'lora': ['lora'], 'nas-lora': ['lora', 'ops', 'alpha'], 'nas-pc-lora': ['lora', 'ops', 'alpha'],
         'conv-lora': ['lora', 'ops']}


def build(method, seed=0):
    torch.manual_seed(seed)
    sam = sam_ref.build(CFG)
    layers = tal.inject(sam.image_encoder, method, RANK, LORA_ALPHA, experts=EXPERTS)
    return sam, layers


def round_robin(cases, runs, warmup=1, inner=1):
    ts = {n: [] for n, _ in cases}
    for r in range(warmup + runs):
        for n, fn in cases:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            if r >= warmup:
                ts[n].append((time.perf_counter() - t0) * 1000 / inner)
    return {n: statistics.median(v) for n, v in ts.items()}


@torch.no_grad()
def randomize(layers):
    for l in layers:
        for n, q in l.named_parameters():
            if not n.startswith('base.'):
                q.copy_(torch.randn_like(q) * 0.05)


def discretize_to(layers, op):
    for l in layers:
        l.cell.discretize(op)


torch.manual_seed(1)
img = torch.randn(1, 3, a.img, a.img)
rows = {}

# ---- training cost
frozen, _ = build('decoder-only')
for q in frozen.parameters():
    q.requires_grad_(False)


def frozen_fwd():
    with torch.no_grad():
        frozen.image_encoder(img)


cases = [('frozen_encoder_fwd', frozen_fwd)]
keep = []


def fwd_bwd_case(sam, layers, trainable):
    def fn():
        for q in trainable:
            q.grad = None
        y = sam.image_encoder(img).sum()
        aux = tal.aux_loss(layers)
        (y if aux is None else y + aux).backward()
    return fn


for m in ['lora', 'nas-lora', 'nas-pc-lora', 'conv-lora']:
    sam, layers = build(m)
    sam.train()
    tal.set_cycled_routing(layers)
    tal.set_trainable(sam, layers, PARTS[m])
    keep.append(sam)
    cases.append((f'{m}_fwd_bwd', fwd_bwd_case(sam, layers, [q for q in sam.parameters() if q.requires_grad])))
fix, fix_layers = build('nas-lora')
fix.train()
discretize_to(fix_layers, 'conv_3x3')
tal.set_trainable(fix, fix_layers, ['lora', 'ops'])
cases.append(('nas-lora_fix_conv_3x3_fwd_bwd', fwd_bwd_case(fix, fix_layers, [q for q in fix.parameters() if q.requires_grad])))
rows.update(round_robin(cases, a.train_runs))
del cases, keep, fix, frozen

# ---- inference cost
variants = []


def add(name, sam):
    sam.eval()
    for q in sam.parameters():
        q.requires_grad_(False)
    variants.append((name, sam))


add('infer_base', build('decoder-only')[0])
sam, layers = build('lora')
randomize(layers)
add('infer_lora_unmerged', sam)
sam, layers = build('lora')
randomize(layers)
for blk, l in zip(sam.image_encoder.blocks, layers):
    blk.attn.qkv = l.merged_linear()
add('infer_lora_merged', sam)
sam, layers = build('nas-lora')
randomize(layers)
discretize_to(layers, 'conv_1x1')
for blk, l in zip(sam.image_encoder.blocks, layers):
    blk.attn.qkv = l.merged_linear()
add('infer_nas-lora_conv_1x1_merged', sam)
sam, layers = build('nas-lora')
randomize(layers)
discretize_to(layers, 'conv_3x3')
add('infer_nas-lora_conv_3x3', sam)
sam, layers = build('nas-lora')
randomize(layers)
for l in layers:
    l.cell.reparameterize()
add('infer_nas-lora_search_reparam', sam)
sam, layers = build('nas-lora')
randomize(layers)
add('infer_nas-lora_search', sam)
sam, layers = build('conv-lora')
randomize(layers)
tal.set_cycled_routing(layers)
add('infer_conv-lora_cycled', sam)
for l in layers:
    l.train()  # the gate draws the (cycled) noise and computes its aux loss, as in the TS twin


def infer_case(sam):
    def fn():
        with torch.no_grad():
            sam.image_encoder(img)
    return fn


rows.update(round_robin([(n, infer_case(s)) for n, s in variants], a.infer_runs, warmup=2))
del variants

# ---- per qkv layer, one window of tokens
T = min(CFG['window_size'], a.img // CFG['patch_size'])
torch.manual_seed(2)
x = torch.randn(1, T, T, 768)


def layer(method, op=None, merge=False):
    l = tal.make_layer(method, torch.nn.Linear(768, 3 * 768), RANK, LORA_ALPHA, experts=EXPERTS)
    randomize([l])
    if op:
        l.cell.discretize(op)
    l.eval().requires_grad_(False)
    return l.merged_linear() if merge else l


mods = [('qkv_base', torch.nn.Linear(768, 3 * 768).requires_grad_(False)), ('qkv_lora_merged', layer('lora', merge=True)),
        ('qkv_nas-lora_conv_1x1_merged', layer('nas-lora', 'conv_1x1', merge=True)), ('qkv_lora_unmerged', layer('lora')),
        ('qkv_nas-lora_conv_3x3', layer('nas-lora', 'conv_3x3'))]


def layer_case(m):
    def fn():
        with torch.no_grad():
            m(x)
    return fn


rows.update(round_robin([(n, layer_case(m)) for n, m in mods], a.layer_runs, warmup=2, inner=20))
print(json.dumps(rows))
