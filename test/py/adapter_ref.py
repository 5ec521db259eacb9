"""PyTorch reference of one NAS-LoRA / NAS-PC-LoRA / Conv-LoRA layer, written from method.md
independently of the TypeScript code. Reads weights, input x (B,H,W,C), upstream gradient g
(and gate noise for Conv-LoRA), writes the output, the gradients and the aux loss."""
import json, math, sys
import torch
import torch.nn as nn
import torch.nn.functional as F
sys.path.insert(0, __import__('os').path.dirname(__file__))
import st

inp, outp, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
T = st.load(inp)
torch.set_num_threads(1)


def conv_op(k, d):
    return nn.Conv2d(spec['cell_ch'], spec['cell_ch'], k, padding=d * (k - 1) // 2, dilation=d, bias=False)


OPS = {
    'skip': lambda: None, 'conv_1x1': lambda: conv_op(1, 1), 'conv_3x3': lambda: conv_op(3, 1), 'conv_5x5': lambda: conv_op(5, 1),
    'dil_conv_3x3': lambda: conv_op(3, 2), 'dil_conv_5x5': lambda: conv_op(5, 2), 'avg_pool_3x3': lambda: None,
    'max_pool_3x3': lambda: None, 'zero': lambda: None,
}


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


class Nas(nn.Module):
    def __init__(self, C, O, r, ops, k):
        super().__init__()
        self.A = nn.Linear(C, r, bias=False)
        self.B = nn.Linear(r, O, bias=False)
        self.alpha = nn.Parameter(torch.zeros(len(ops)))
        self.names = ops
        self.ops = nn.ModuleDict({n: m for n in ops if (m := OPS[n]()) is not None})
        self.k, self.r = k, r

    def cell(self, z):
        w = self.alpha.softmax(0)
        return sum(w[i] * apply_op(n, self.ops[n] if n in self.ops else None, z) for i, n in enumerate(self.names))

    def forward(self, x):
        z = self.A(x).permute(0, 3, 1, 2)
        if self.k == 1:
            y = self.cell(z)
        else:
            c = math.ceil(self.r / self.k)
            y = torch.cat([self.cell(z[:, :c]), z[:, c:]], 1)
            if self.r % self.k == 0:
                b, r, h, w = y.shape
                y = y.view(b, self.k, r // self.k, h, w).transpose(1, 2).reshape(b, r, h, w)
        return self.B(y.permute(0, 2, 3, 1))


class Expert(nn.Module):
    def __init__(self, r, f):
        super().__init__()
        self.conv = nn.Conv2d(r, r, 3, padding=1)
        self.f = f

    def forward(self, m):
        h, w = m.shape[-2:]
        up = m if self.f == 1 else F.interpolate(m, size=(h * self.f, w * self.f), mode='bicubic', align_corners=False)
        y = F.gelu(self.conv(up))
        return y if self.f == 1 else F.interpolate(y, size=(h, w), mode='bicubic', align_corners=False)


def cv2(x):
    return x.float().var() / (x.float().mean() ** 2 + 1e-10) if x.shape[0] > 1 else torch.tensor(0.)


class ConvLora(nn.Module):
    def __init__(self, C, O, r, M):
        super().__init__()
        self.A = nn.Linear(C, r, bias=False)
        self.B = nn.Linear(r, O, bias=False)
        self.w_gate = nn.Parameter(torch.zeros(r, M))
        self.w_noise = nn.Parameter(torch.zeros(r, M))
        self.experts = nn.ModuleList([Expert(r, i + 1) for i in range(M)])
        self.M = M

    def forward(self, x, noise, train):
        m = self.A(x).permute(0, 3, 1, 2)
        g = m.mean((2, 3))
        clean = g @ self.w_gate
        if train:
            std = F.softplus(g @ self.w_noise) + 1e-2
            logits = clean + noise * std
        else:
            logits = clean
        top, idx = logits.topk(min(2, self.M), 1)
        gates = torch.zeros_like(logits).scatter(1, idx[:, :1], top[:, :1].softmax(1))
        aux = torch.tensor(0.)
        if train:
            importance = gates.sum(0)
            t_in, t_out = top[:, 1:2], top[:, 0:1]
            n = torch.distributions.Normal(0., 1.)
            is_in = logits > t_in
            p = torch.where(is_in, n.cdf((clean - t_in) / std), n.cdf((clean - t_out) / std))
            aux = 0.01 * (cv2(importance) + cv2(p.sum(0)))
        out = m.clone()
        for e in range(self.M):
            sel = (idx[:, 0] == e).nonzero().flatten()
            if len(sel):
                out = out.index_add(0, sel, self.experts[e](m[sel]))
        return self.B(out.permute(0, 2, 3, 1)), aux


torch.manual_seed(0)
C, O, r = spec['C'], spec['O'], spec['r']
base = nn.Linear(C, O)
base.weight.data, base.bias.data = T['base.weight'], T['base.bias']
if spec['method'] == 'conv-lora':
    mod = ConvLora(C, O, r, spec['experts'])
else:
    mod = Nas(C, O, r, spec['ops'], spec['k'])
sd = {k[len('m.'):]: v for k, v in T.items() if k.startswith('m.')}
missing, unexpected = mod.load_state_dict(sd, strict=True)
x = T['x'].requires_grad_(True)
s = spec['alpha'] / r
if spec['method'] == 'conv-lora':
    mod.train(spec['train'])
    d, aux = mod(x, T.get('noise'), spec['train'])
else:
    d, aux = mod(x), torch.tensor(0.)
out = base(x) + s * d
(out * T['g']).sum().add(aux).backward()
res = {'out': out, 'aux': aux.reshape(1), 'grad.x': x.grad}
for n, p in mod.named_parameters():
    if p.grad is not None:
        res['grad.' + n] = p.grad
st.save(outp, res)
