"""PyTorch twin of bench/engine.ts: the same workloads, the same thread count, median ms."""
import argparse, json, math, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, default=1)
p.add_argument('--runs', type=int, default=7)
p.add_argument('--quick', action='store_true')
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)


def bench(fn, runs=a.runs, warmup=2, inner=1):
    for _ in range(warmup):
        for _ in range(inner):
            fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) * 1000 / inner)
    return statistics.median(ts)


# --- the SAM ViT block, as segment-anything's image_encoder.py ---------------------------------
def window_partition(x, ws):
    B, H, W, C = x.shape
    ph, pw = (ws - H % ws) % ws, (ws - W % ws) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    Hp, Wp = H + ph, W + pw
    x = x.view(B, Hp // ws, ws, Wp // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C), (Hp, Wp)


def window_unpartition(w, ws, pad_hw, hw):
    Hp, Wp = pad_hw
    H, W = hw
    B = w.shape[0] // (Hp * Wp // ws // ws)
    x = w.view(B, Hp // ws, Wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).contiguous().view(B, Hp, Wp, -1)
    return x[:, :H, :W, :].contiguous()


def get_rel_pos(q_size, k_size, rel_pos):
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[rel.long()]


class Attention(nn.Module):
    def __init__(self, dim, heads, input_size):
        super().__init__()
        self.h = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.randn(2 * input_size[0] - 1, dim // heads) * 0.02)
        self.rel_pos_w = nn.Parameter(torch.randn(2 * input_size[1] - 1, dim // heads) * 0.02)

    def forward(self, x):
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.h, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.h, H * W, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        Rh, Rw = get_rel_pos(H, H, self.rel_pos_h), get_rel_pos(W, W, self.rel_pos_w)
        r_q = q.reshape(B * self.h, H, W, -1)
        rel_h = torch.einsum('bhwc,hkc->bhwk', r_q, Rh)
        rel_w = torch.einsum('bhwc,wkc->bhwk', r_q, Rw)
        attn = (attn.view(B * self.h, H, W, H, W) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(B * self.h, H * W, H * W)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(B, self.h, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim=768, heads=12, ws=14, tokens=64):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, (ws, ws) if ws else (tokens, tokens))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))
        self.ws = ws

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        if self.ws:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.ws)
        x = self.attn(x)
        if self.ws:
            x = window_unpartition(x, self.ws, pad_hw, (H, W))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


rows = {}
n = 1 if a.quick else 1
A, B = torch.randn(1024, 1024), torch.randn(1024, 1024)
rows['matmul_1024'] = bench(lambda: A @ B)
X, W = torch.randn(4096, 768), torch.randn(768, 2304)
rows['matmul_4096x768x2304'] = bench(lambda: X @ W)
I, K = torch.randn(1, 256, 64, 64), torch.randn(256, 256, 3, 3)
rows['conv2d_3x3_64x64x256'] = bench(lambda: F.conv2d(I, K, padding=1))

blk = Block()
xb = torch.randn(1, 64, 64, 768)
with torch.no_grad():
    rows['vit_b_block_fwd'] = bench(lambda: blk(xb), runs=5)


def fb():
    blk.zero_grad(set_to_none=True)
    blk(xb).sum().backward()


xg = xb.clone().requires_grad_(False)
rows['vit_b_block_fwd_bwd'] = bench(fb, runs=5)

# tiny SAM-like training step: 2 blocks (windowed + global) at 16x16 tokens, 64 wide, a head, AdamW
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 64, 16, 16)
        self.b1 = Block(64, 4, 8, 16)
        self.b2 = Block(64, 4, 0, 16)
        self.head = nn.Conv2d(64, 1, 1)

    def forward(self, x):
        x = self.patch(x).permute(0, 2, 3, 1)
        x = self.b2(self.b1(x))
        return self.head(x.permute(0, 3, 1, 2))


tiny = Tiny()
opt = torch.optim.AdamW(tiny.parameters(), lr=1e-4)
ti, tt = torch.randn(4, 3, 256, 256), (torch.rand(4, 1, 16, 16) > 0.5).float()


def step():
    opt.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(tiny(ti), tt)
    loss.backward()
    opt.step()


rows['tiny_train_step'] = bench(step, runs=9)
one = torch.ones(1)
rows['tiny_op_overhead_us'] = bench(lambda: one + one, runs=5, inner=20000) * 1000
print(json.dumps(rows))
