"""PyTorch twin of bench/serve.ts: segment-anything's SamPredictor (predictor.py and
utils/transforms.py's ResizeLongestSide, copied below; torchvision's resize of a PIL image is PIL's
Image.resize(BILINEAR), called directly here as torchvision is not installed) on the modeling code of
test/py/sam_ref.py, with the same synthetic ViT-B checkpoint, the same thread count. A server: it
loads the checkpoint twice (ViT-B at 1024, and at --encoder-img with pos_embed and the global blocks'
rel-pos resized by sam_ref.resize_for), then answers one JSON line per request line on stdin:
  ping               {}                          (once loaded)
  set_image          {ms}: SamPredictor.set_image of the --image at --encoder-img
  predict <case>     {ms, iou}: SamPredictor.predict on the 1024 model, the --embedding already set
"""
import argparse, json, os, sys, time
from copy import deepcopy
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'py'))
import sam_ref  # noqa: E402  (sets 1 thread on import: set ours after)

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, default=1)
p.add_argument('--ckpt', required=True)
p.add_argument('--encoder-img', type=int, default=512)
p.add_argument('--image', required=True)
p.add_argument('--height', type=int, required=True)
p.add_argument('--width', type=int, required=True)
p.add_argument('--embedding', required=True)
a = p.parse_args()
torch.set_num_threads(a.threads)
VIT_B = dict(img_size=1024, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, window_size=14,
             global_attn_indexes=[2, 5, 8, 11], prompt_embed_dim=256, mask_in_chans=16, decoder_depth=2,
             decoder_mlp_dim=2048, decoder_heads=8, iou_head_hidden_dim=256)


# ---- segment_anything/utils/transforms.py ----------------------------------------------------
class ResizeLongestSide:
    def __init__(self, target_length):
        self.target_length = target_length

    def apply_image(self, image):
        target_size = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        # np.array(resize(to_pil_image(image), target_size)): torchvision resizes a PIL image with PIL.
        return np.array(Image.fromarray(image).resize((target_size[1], target_size[0]), Image.BILINEAR))

    def apply_coords(self, coords, original_size):
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes, original_size):
        boxes = self.apply_coords(boxes.reshape(-1, 2, 2), original_size)
        return boxes.reshape(-1, 4)

    @staticmethod
    def get_preprocess_shape(oldh, oldw, long_side_length):
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return (int(newh + 0.5), int(neww + 0.5))


# ---- segment_anything/predictor.py -----------------------------------------------------------
class SamPredictor:
    def __init__(self, sam_model):
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    def set_image(self, image, image_format='RGB'):
        assert image_format in ['RGB', 'BGR']
        if image_format != 'RGB':
            image = image[..., ::-1]
        input_image = self.transform.apply_image(image)
        input_image_torch = torch.as_tensor(input_image)
        input_image_torch = input_image_torch.permute(2, 0, 1).contiguous()[None, :, :, :]
        self.set_torch_image(input_image_torch, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image, original_image_size):
        assert (len(transformed_image.shape) == 4 and transformed_image.shape[1] == 3
                and max(*transformed_image.shape[2:]) == self.model.image_encoder.img_size)
        self.reset_image()
        self.original_size = original_image_size
        self.input_size = tuple(transformed_image.shape[-2:])
        input_image = self.model.preprocess(transformed_image)
        self.features = self.model.image_encoder(input_image)
        self.is_image_set = True

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True,
                return_logits=False):
        if not self.is_image_set:
            raise RuntimeError('An image must be set with .set_image(...) before mask prediction.')
        coords_torch, labels_torch, box_torch, mask_input_torch = None, None, None, None
        if point_coords is not None:
            assert point_labels is not None, 'point_labels must be supplied if point_coords is supplied.'
            point_coords = self.transform.apply_coords(point_coords, self.original_size)
            coords_torch = torch.as_tensor(point_coords, dtype=torch.float)
            labels_torch = torch.as_tensor(point_labels, dtype=torch.int)
            coords_torch, labels_torch = coords_torch[None, :, :], labels_torch[None, :]
        if box is not None:
            box = self.transform.apply_boxes(box, self.original_size)
            box_torch = torch.as_tensor(box, dtype=torch.float)
            box_torch = box_torch[None, :]
        if mask_input is not None:
            mask_input_torch = torch.as_tensor(mask_input, dtype=torch.float)
            mask_input_torch = mask_input_torch[None, :, :, :]
        masks, iou_predictions, low_res_masks = self.predict_torch(
            coords_torch, labels_torch, box_torch, mask_input_torch, multimask_output, return_logits=return_logits)
        masks_np = masks[0].detach().cpu().numpy()
        iou_predictions_np = iou_predictions[0].detach().cpu().numpy()
        low_res_masks_np = low_res_masks[0].detach().cpu().numpy()
        return masks_np, iou_predictions_np, low_res_masks_np

    @torch.no_grad()
    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                      return_logits=False):
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse_embeddings, dense_embeddings = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res_masks, iou_predictions = self.model.mask_decoder(
            self.features, self.model.prompt_encoder.get_dense_pe(), sparse_embeddings, dense_embeddings,
            multimask_output)
        masks = self.model.postprocess_masks(low_res_masks, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou_predictions, low_res_masks

    def reset_image(self):
        self.is_image_set = False
        self.features = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None


# ---- the bench ------------------------------------------------------------------------------
sd = torch.load(a.ckpt, map_location='cpu')
big = sam_ref.build(VIT_B)
big.load_state_dict(sd)
small = sam_ref.build(dict(VIT_B, img_size=a.encoder_img))
sam_ref.resize_for(sd, small, VIT_B['global_attn_indexes'], a.encoder_img // VIT_B['patch_size'])
del sd

image = np.fromfile(a.image, dtype=np.uint8).reshape(a.height, a.width, 3)
encoder = SamPredictor(small)
predictor = SamPredictor(big)
# The embedding already set, as set_image leaves it.
predictor.features = torch.from_numpy(np.fromfile(a.embedding, dtype=np.float32).reshape(1, 256, 64, 64).copy())
predictor.original_size = (a.height, a.width)
predictor.input_size = ResizeLongestSide.get_preprocess_shape(a.height, a.width, 1024)
predictor.is_image_set = True

# bench/serve.ts CASES
CASES = {
    'serve_predict_point': dict(point_coords=np.array([[700, 420]]), point_labels=np.array([1]), multimask_output=False),
    'serve_predict_point_multimask': dict(point_coords=np.array([[700, 420]]), point_labels=np.array([1]), multimask_output=True),
    'serve_predict_box': dict(box=np.array([300, 200, 1000, 800]), multimask_output=False),
}

for line in sys.stdin:
    cmd = line.split()
    out = {}
    if cmd and cmd[0] == 'set_image':
        t0 = time.perf_counter()
        encoder.set_image(image)
        out = {'ms': (time.perf_counter() - t0) * 1000}
    elif cmd and cmd[0] == 'predict':
        t0 = time.perf_counter()
        _, iou, _ = predictor.predict(**CASES[cmd[1]])
        out = {'ms': (time.perf_counter() - t0) * 1000, 'iou': [float(x) for x in iou]}
    print(json.dumps(out), flush=True)
