"""PyTorch twin of bench/sam.ts: segment-anything's modeling code (test/py/sam_ref.py) on the same
synthetic ViT-B checkpoint, the same thread count. A server: it loads the checkpoint, then answers
one JSON line per request line on stdin, so that bench/sam.ts can alternate the two sides run by run:
  ping     {}                    (once loaded)
  load     {vit_b_load: ms, vit_b_load_rss_delta_mb, vit_b_load_rss_peak_mb}
  encoder  {ms: one image-encoder forward at 1024}
  decoder  {ms: prompt encoder + mask decoder, one point, multimask}"""
import argparse, json, os, sys, time
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'py'))
import sam_ref  # noqa: E402  (sets 1 thread on import: set ours after)

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, default=1)
p.add_argument('--ckpt', required=True)
a = p.parse_args()
torch.set_num_threads(a.threads)
MB = 2 ** 20
VIT_B = dict(img_size=1024, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, window_size=14,
             global_attn_indexes=[2, 5, 8, 11], prompt_embed_dim=256, mask_in_chans=16, decoder_depth=2,
             decoder_mlp_dim=2048, decoder_heads=8, iou_head_hidden_dim=256)


def status_kb(key):
    """From /proc/self/status. VmHWM, not getrusage's maxrss: that one carries the parent's peak over exec."""
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ':')) * 1024


# build_sam.py: build the model, torch.load the whole state dict, load_state_dict.
rss0 = status_kb('VmRSS')
t0 = time.perf_counter()
sam = sam_ref.build(VIT_B)
sd = torch.load(a.ckpt, map_location='cpu')
sam.load_state_dict(sd)
del sd
load = {'vit_b_load': (time.perf_counter() - t0) * 1000}
peak = status_kb('VmHWM')
load['vit_b_load_rss_delta_mb'] = round((peak - rss0) / MB, 1)
load['vit_b_load_rss_peak_mb'] = round(peak / MB, 1)

torch.manual_seed(1)
img = torch.randn(1, 3, 1024, 1024)
coords, labels = torch.tensor([[[512.0, 400.0]]]), torch.tensor([[1]], dtype=torch.int32)
features = None


def encoder():
    global features
    features = sam.image_encoder(img)


def decoder():
    pe = sam.prompt_encoder
    sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
    return sam.mask_decoder(features, pe.get_dense_pe(), sparse, dense, True)


with torch.no_grad():
    for line in sys.stdin:
        cmd = line.strip()
        if cmd in ('encoder', 'decoder'):
            if cmd == 'decoder' and features is None:
                encoder()
            t0 = time.perf_counter()
            (encoder if cmd == 'encoder' else decoder)()
            out = {'ms': (time.perf_counter() - t0) * 1000}
        else:
            out = load if cmd == 'load' else {}
        print(json.dumps(out), flush=True)
