"""PyTorch adapter layers for the benchmark twins (bench/torch_adapters.py, bench/torch_train.py):
LoRA, NAS-LoRA / NAS-PC-LoRA (search, discretized, re-parameterized) and Conv-LoRA, each wrapping a
frozen nn.Linear, written from docs/method.md (the same maths as test/py/adapter_ref.py, which is a
one-shot script). `inject(model, ...)` replaces every `image_encoder.blocks.*.attn.qkv` of a
test/py/sam_ref.py Sam (or every `blocks.*.attn.qkv` of its encoder) by an adapter layer.

Conv-LoRA routing can be made deterministic for timing: `set_cycled_routing(layers)` gives layer l
a noise source that sends map n to expert (l + n) mod M (both twins do the same), so naslora and
PyTorch run the same experts on the same windows."""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'test', 'py'))
from losses_ref import structure as structure_loss  # noqa: E402  (the test reference's formula)
import sam_ref  # noqa: E402  (sets torch threads to 1 on import; callers set their own afterwards)

DEFAULT_OPS = ['skip', 'conv_1x1', 'conv_3x3', 'conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3']
CONV_OPS = {'conv_1x1': (1, 1), 'conv_3x3': (3, 1), 'conv_5x5': (5, 1), 'dil_conv_3x3': (3, 2), 'dil_conv_5x5': (5, 2)}


def apply_op(name, m, z):
    if name == 'skip':
        return z
    if name == 'avg_pool_3x3':
        return F.avg_pool2d(z, 3, 1, 1, count_include_pad=False)
    if name == 'max_pool_3x3':
        return F.max_pool2d(z, 3, 1, 1)
    if name == 'zero':
        return torch.zeros_like(z)
    return m(z)


def op_kernel(name, m, c, size):
    """Dense (c, c, size, size) kernel of a conv-type op (skip, convs, dilated convs)."""
    k = torch.zeros(c, c, size, size)
    if name == 'skip':
        k[:, :, size // 2, size // 2] = torch.eye(c)
        return k
    ks, d = CONV_OPS[name]
    span = d * (ks - 1) + 1
    off = (size - span) // 2
    k[:, :, off:off + span:d, off:off + span:d] = m.weight
    return k


class MixedCell(nn.Module):
    def __init__(self, c, ops):
        super().__init__()
        self.c, self.names = c, list(ops)
        self.alpha = nn.Parameter(torch.zeros(len(ops)))
        self.ops = nn.ModuleDict({n: nn.Conv2d(c, c, CONV_OPS[n][0], padding=CONV_OPS[n][1] * (CONV_OPS[n][0] - 1) // 2,
                                               dilation=CONV_OPS[n][1], bias=False) for n in ops if n in CONV_OPS})
        self.derived = None
        self.reparam = None

    def weights(self):
        if self.derived is not None:
            return [1.0 if n == self.derived else 0.0 for n in self.names]
        return self.alpha.detach().softmax(0).tolist()

    def forward(self, z):
        if self.reparam is not None:
            kernel, size, others = self.reparam
            out = F.conv2d(z, kernel, padding=(size - 1) // 2) if kernel is not None else None
            for n, w in others:
                y = apply_op(n, None, z) * w
                out = y if out is None else out + y
            return out
        if self.derived is not None:
            return apply_op(self.derived, self.ops[self.derived] if self.derived in self.ops else None, z)
        w = self.alpha.softmax(0)
        out = None
        for i, n in enumerate(self.names):
            y = apply_op(n, self.ops[n] if n in self.ops else None, z) * w[i]
            out = y if out is None else out + y
        return out

    def discretize(self, name=None):
        w = self.weights()
        self.derived = name if name is not None else self.names[max(range(len(w)), key=lambda i: w[i])]
        self.alpha.requires_grad_(False)
        for n, m in self.ops.items():
            if n != self.derived:
                m.requires_grad_(False)
        return self.derived

    @torch.no_grad()
    def reparameterize(self):
        w = self.weights()
        convs = [(n, wi) for n, wi in zip(self.names, w) if (n in CONV_OPS or n == 'skip') and wi != 0]
        size = max([1] + [CONV_OPS[n][1] * (CONV_OPS[n][0] - 1) + 1 for n, _ in convs if n in CONV_OPS])
        kernel = sum(op_kernel(n, self.ops[n] if n in self.ops else None, self.c, size) * wi for n, wi in convs) if convs else None
        others = [(n, wi) for n, wi in zip(self.names, w) if n in ('avg_pool_3x3', 'max_pool_3x3') and wi != 0]
        self.reparam = (kernel, size, others)


class LowRank(nn.Module):
    """h = W0·x + s·B·g(A·x); the base Linear is kept as `base` (frozen by the caller)."""

    def __init__(self, base, r, lora_alpha):
        super().__init__()
        self.base = base
        self.r, self.scale = r, lora_alpha / r
        self.A = nn.Linear(base.in_features, r, bias=False)
        self.B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.B.weight)

    def mid(self, z):
        return z

    def forward(self, x):
        return self.base(x) + self.scale * self.B(self.mid(self.A(x)))

    def merge_matrix(self):
        return None

    @torch.no_grad()
    def merged_linear(self):
        """The base Linear with the branch folded into W0 (what a merged export serves)."""
        m = self.merge_matrix()
        if m is None:
            raise ValueError('this adapter keeps a spatial branch')
        lin = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        lin.weight.copy_(self.base.weight + self.scale * (self.B.weight @ m @ self.A.weight))
        if self.base.bias is not None:
            lin.bias.copy_(self.base.bias)
        return lin.requires_grad_(False)


class LoraLayer(LowRank):
    def merge_matrix(self):
        return torch.eye(self.r)


class NasLayer(LowRank):
    def __init__(self, base, r, lora_alpha, ops=DEFAULT_OPS, k=1):
        super().__init__(base, r, lora_alpha)
        self.k = k
        self.cc = math.ceil(r / k)
        self.cell = MixedCell(self.cc, ops)

    def mid(self, z):
        m = z.permute(0, 3, 1, 2)
        if self.k == 1:
            y = self.cell(m)
        else:
            y = torch.cat([self.cell(m[:, :self.cc]), m[:, self.cc:]], 1)
            if self.r % self.k == 0:
                b, r, h, w = y.shape
                y = y.view(b, self.k, r // self.k, h, w).transpose(1, 2).reshape(b, r, h, w)
        return y.permute(0, 2, 3, 1)

    def merge_matrix(self):
        w = self.cell.weights()
        if any(wi != 0 and n not in ('skip', 'conv_1x1', 'zero') for n, wi in zip(self.cell.names, w)):
            return None
        return self.mid(torch.eye(self.r).reshape(self.r, 1, 1, self.r)).reshape(self.r, self.r).t()


class Expert(nn.Module):
    def __init__(self, r, f):
        super().__init__()
        self.conv = nn.Conv2d(r, r, 3, padding=1)
        nn.init.zeros_(self.conv.bias)
        self.f = f

    def forward(self, m):
        h, w = m.shape[-2:]
        up = m if self.f == 1 else F.interpolate(m, size=(h * self.f, w * self.f), mode='bicubic', align_corners=False)
        y = F.gelu(self.conv(up))
        return y if self.f == 1 else F.interpolate(y, size=(h, w), mode='bicubic', align_corners=False)


def cv2(x):
    return x.var() / (x.mean() ** 2 + 1e-10) if x.shape[0] > 1 else torch.zeros(())


class ConvLoraLayer(LowRank):
    def __init__(self, base, r, lora_alpha, experts=8, loss_coef=1e-2, noisy=True):
        super().__init__(base, r, lora_alpha)
        self.M, self.loss_coef, self.noisy = experts, loss_coef, noisy
        self.w_gate = nn.Parameter(torch.zeros(r, experts))
        self.w_noise = nn.Parameter(torch.zeros(r, experts))
        self.experts = nn.ModuleList([Expert(r, i + 1) for i in range(experts)])
        self.noise = torch.randn_like
        self.aux = None

    def mid(self, z):
        m = z.permute(0, 3, 1, 2)
        g = m.mean((2, 3))
        clean = g @ self.w_gate
        std = None
        if self.training and self.noisy:
            std = F.softplus(g @ self.w_noise) + 1e-2
            logits = clean + self.noise(clean) * std
        else:
            logits = clean
        top, idx = logits.topk(min(2, self.M), 1)
        gates = torch.zeros_like(logits).scatter(1, idx[:, :1], top[:, :1].softmax(1))
        self.aux = None
        if self.training:
            importance = gates.sum(0)
            if std is not None and self.M > 1:
                t_in, t_out = top[:, 1:2], top[:, 0:1]
                is_in = logits > t_in
                cdf = lambda v: 0.5 * (1 + torch.erf(v / math.sqrt(2)))
                load = torch.where(is_in, cdf((clean - t_in) / std), cdf((clean - t_out) / std)).sum(0)
            else:
                load = (gates > 0).float().sum(0)
            self.aux = self.loss_coef * (cv2(importance) + cv2(load))
        out = m
        choice = idx[:, 0].tolist()
        for e in sorted(set(choice)):
            sel = torch.tensor([n for n, c in enumerate(choice) if c == e])
            out = out.index_add(0, sel, self.experts[e](m.index_select(0, sel)))
        return out.permute(0, 2, 3, 1)


def cycled_noise(layer_index):
    """Noise that routes map n of this layer to expert (layer_index + n) mod M."""
    def noise(like):
        n, m = like.shape
        t = torch.zeros(n, m)
        for i in range(n):
            t[i, (layer_index + i) % m] = 1.0
        return t
    return noise


def set_cycled_routing(layers):
    for li, l in enumerate(layers):
        if isinstance(l, ConvLoraLayer):
            l.noise = cycled_noise(li)


def make_layer(method, base, r, lora_alpha, ops=DEFAULT_OPS, pc_k=2, experts=8):
    if method == 'lora':
        return LoraLayer(base, r, lora_alpha)
    if method == 'nas-lora':
        return NasLayer(base, r, lora_alpha, ops, 1)
    if method == 'nas-pc-lora':
        return NasLayer(base, r, lora_alpha, ops, pc_k)
    if method == 'conv-lora':
        return ConvLoraLayer(base, r, lora_alpha, experts)
    raise ValueError(method)


def inject(encoder, method, r, lora_alpha, **kw):
    """Wraps every block's attn.qkv of an ImageEncoderViT; returns the layers in block order."""
    layers = []
    if method == 'decoder-only':
        return layers
    for blk in encoder.blocks:
        layer = make_layer(method, blk.attn.qkv, r, lora_alpha, **kw)
        blk.attn.qkv = layer
        layers.append(layer)
    return layers


def aux_loss(layers):
    s = None
    for l in layers:
        if isinstance(l, ConvLoraLayer) and l.aux is not None:
            s = l.aux if s is None else s + l.aux
    return s


def set_trainable(sam, layers, parts):
    """requires_grad on exactly the given parts: 'lora' (A, B), 'ops' (cell convs / Conv-LoRA experts
    and gates), 'alpha', 'decoder' (mask decoder without the IoU head)."""
    for p in sam.parameters():
        p.requires_grad_(False)
    for l in layers:
        if 'lora' in parts:
            l.A.weight.requires_grad_(True)
            l.B.weight.requires_grad_(True)
        if isinstance(l, NasLayer):
            if 'alpha' in parts and l.cell.derived is None:
                l.cell.alpha.requires_grad_(True)
            if 'ops' in parts:
                for n, m in l.cell.ops.items():
                    if l.cell.derived is None or n == l.cell.derived:
                        m.requires_grad_(True)
        if isinstance(l, ConvLoraLayer) and 'ops' in parts:
            l.w_gate.requires_grad_(True)
            l.w_noise.requires_grad_(True)
            l.experts.requires_grad_(True)
    if 'decoder' in parts:
        for n, p in sam.mask_decoder.named_parameters():
            if not n.startswith('iou_prediction_head.'):
                p.requires_grad_(True)


def segment_logits(sam, images):
    """Prompt-free SAM (the Conv-LoRA protocol), the whole batch through the decoder at once as
    src/model/sam/segment.ts: low-res logits (B, 1, 4h, 4w)."""
    emb = sam.image_encoder(images)
    B = images.shape[0]
    sparse, dense = sam.prompt_encoder(None, None, None)
    masks, _ = sam.mask_decoder.predict_masks(emb, sam.prompt_encoder.get_dense_pe(), sparse.expand(B, -1, -1),
                                              dense.expand(B, -1, -1, -1), batched_images=True)
    return masks[:, 0:1]
