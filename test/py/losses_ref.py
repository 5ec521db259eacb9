"""PyTorch reference of the task losses (method.md, Task set-up), written from the published formulas
independently of src/train/losses.ts. Reads logits x and targets y (B,1,H,W); for every loss writes
its value `<name>` and its gradient w.r.t. x `<name>.grad`."""
import os, sys
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.dirname(__file__))
import st

torch.set_num_threads(1)


def structure(pred, mask):
    # PraNet / Conv-LoRA, with the per-pixel BCE that reduce='none' was meant to give.
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = F.binary_cross_entropy_with_logits(pred, mask, reduction='none')
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(pred)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def bbce_batch(pred, gt):
    # Conv-LoRA / SAM-Adapter BBCEWithLogitLoss: counts over the whole batch.
    eps = 1e-10
    count_pos = torch.sum(gt) + eps
    count_neg = torch.sum(1. - gt)
    ratio = count_neg / count_pos
    w_neg = count_pos / (count_pos + count_neg)
    return w_neg * F.binary_cross_entropy_with_logits(pred, gt, pos_weight=ratio)


def bbce_image(pred, gt):
    # The same, image by image; images have equal sizes, so the batch mean of per-image means.
    return torch.stack([bbce_batch(pred[i:i + 1], gt[i:i + 1]) for i in range(pred.shape[0])]).mean()


def dice(pred, gt, per_image):
    p = torch.sigmoid(pred)
    if not per_image:
        return 1 - (2 * (p * gt).sum() + 1) / (p.sum() + gt.sum() + 1)
    p, g = p.flatten(1), gt.flatten(1)
    return (1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)).mean()


LOSSES = {
    'structure': structure,
    'balanced_bce': bbce_image,
    'balanced_bce_batch': bbce_batch,
    'dice': lambda x, y: dice(x, y, True),
    'dice_batch': lambda x, y: dice(x, y, False),
    'bce_dice': lambda x, y: F.binary_cross_entropy_with_logits(x, y) + dice(x, y, True),
}

def main():
    T = st.load(sys.argv[1])
    out = {}
    for name, fn in LOSSES.items():
        x = T['x'].clone().requires_grad_(True)
        loss = fn(x, T['y'])
        loss.backward()
        out[name] = loss.detach().reshape(1)
        out[name + '.grad'] = x.grad
    st.save(sys.argv[2], out)


if __name__ == '__main__':
    main()
