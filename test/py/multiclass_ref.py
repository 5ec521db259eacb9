"""PyTorch reference for the multi-class loss: torch.nn.functional.cross_entropy with class weights and
ignore_index, plus a soft Dice over classes written from its formula. Reads logits x (B,K,H,W) and
targets y (B,H,W, int64); args: ignore_index (or 'none'), dice weight, then the class weights (or none).
Writes `loss` and `loss.grad` (w.r.t. x)."""
import os, sys
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.dirname(__file__))
import st

torch.set_num_threads(1)
inp, out, ignore, dice_w, *weights = sys.argv[1:]
t = st.load(inp)
x = t['x'].double().requires_grad_(True)
y = t['y'].long()
K = x.shape[1]
ignore = None if ignore == 'none' else int(ignore)
w = torch.tensor([float(v) for v in weights], dtype=torch.double) if weights else None
ce = F.cross_entropy(x, y, weight=w, ignore_index=-100 if ignore is None else ignore)
loss = ce
if float(dice_w) > 0:
    valid = torch.ones_like(y, dtype=torch.bool) if ignore is None else (y != ignore)
    yy = torch.where(valid, y, torch.zeros_like(y))
    onehot = F.one_hot(yy, K).permute(0, 3, 1, 2).double() * valid.unsqueeze(1)
    p = torch.softmax(x, 1) * valid.unsqueeze(1)
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = ((2 * inter + 1e-6) / (denom + 1e-6)).mean()
    loss = ce + float(dice_w) * (1 - dice)
loss.backward()
st.save(out, {'loss': loss.detach().float().reshape(1), 'loss.grad': x.grad.float()})
