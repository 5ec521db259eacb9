"""NumPy reference for naslora's multi-class scores, from files: predicted class-index PNGs and
ground-truth class-index PNGs, read with PIL. Per class c over the whole set: IoU = TP/(TP+FP+FN),
Dice = 2TP/(2TP+FP+FN), pixels whose ground truth is the ignore index left out everywhere; mIoU and
mDice over the classes present (TP+FP+FN > 0); pixel accuracy = correct / valid pixels; and each
image's own mIoU/mDice the same way on that image alone.
Args: K, ignore index (or 'none'), then pred.png gt.png pairs. Prints JSON."""
import json, sys
import numpy as np
from PIL import Image

k = int(sys.argv[1])
ignore = None if sys.argv[2] == 'none' else int(sys.argv[2])
files = sys.argv[3:]
pairs = list(zip(files[0::2], files[1::2]))


def counts(pred, gt):
    valid = np.ones_like(gt, dtype=bool) if ignore is None else gt != ignore
    p, g = pred[valid].astype(np.int64), gt[valid].astype(np.int64)
    tp = np.bincount(g[p == g], minlength=k)[:k]
    fp = np.bincount(p, minlength=k)[:k] - tp
    fn = np.bincount(g, minlength=k)[:k] - tp
    return tp, fp, fn, int((p == g).sum()), int(valid.sum())


def summarise(tp, fp, fn, correct, valid):
    union = tp + fp + fn
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    dice = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    return {'iou': [None if np.isnan(v) else float(v) for v in iou], 'dice': [None if np.isnan(v) else float(v) for v in dice],
            'miou': float(np.nanmean(iou)), 'mdice': float(np.nanmean(dice)), 'pa': correct / valid}


tot = [np.zeros(k, np.int64) for _ in range(3)] + [0, 0]
images = []
for pf, gf in pairs:
    pred = np.asarray(Image.open(pf))
    gt = np.asarray(Image.open(gf))
    assert pred.shape == gt.shape, (pf, pred.shape, gt.shape)
    c = counts(pred, gt)
    for i in range(5):
        tot[i] = tot[i] + c[i]
    images.append(summarise(*c))
out = summarise(*tot)
out['images'] = images
print(json.dumps(out))
