"""Minimal re-implementation of segment-anything's modeling code (facebookresearch/segment-anything,
commit dca509f, Apache-2.0: image_encoder.py, common.py, prompt_encoder.py, transformer.py,
mask_decoder.py, sam.py and SamPredictor.predict_torch), kept line by line to the original, used to
check the TypeScript port on configurations other than the fixture's, with random weights.

usage: sam_ref.py OUT_DIR   writes, per case, <case>.weights.{pth|safetensors} (segment-anything
names) and <case>.io.safetensors (inputs and outputs).
"""
import math, os, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
sys.path.insert(0, os.path.dirname(__file__))
import st

torch.set_num_threads(1)


# ---- common.py ------------------------------------------------------------------------------
class MLPBlock(nn.Module):
    def __init__(self, embedding_dim, mlp_dim, act=nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x):
        return self.lin2(self.act(self.lin1(x)))


class LayerNorm2d(nn.Module):
    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


# ---- image_encoder.py -----------------------------------------------------------------------
class ImageEncoderViT(nn.Module):
    def __init__(self, img_size=1024, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 out_chans=256, qkv_bias=True, norm_layer=nn.LayerNorm, act_layer=nn.GELU, use_abs_pos=True,
                 use_rel_pos=False, rel_pos_zero_init=True, window_size=0, global_attn_indexes=()):
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(kernel_size=(patch_size, patch_size), stride=(patch_size, patch_size),
                                      in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, img_size // patch_size, img_size // patch_size, embed_dim))
        self.blocks = nn.ModuleList()
        for i in range(depth):
            self.blocks.append(Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                     norm_layer=norm_layer, act_layer=act_layer, use_rel_pos=use_rel_pos,
                                     rel_pos_zero_init=rel_pos_zero_init,
                                     window_size=window_size if i not in global_attn_indexes else 0,
                                     input_size=(img_size // patch_size, img_size // patch_size)))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False), LayerNorm2d(out_chans))

    def forward(self, x):
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm, act_layer=nn.GELU,
                 use_rel_pos=False, rel_pos_zero_init=True, window_size=0, input_size=None):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
                              rel_pos_zero_init=rel_pos_zero_init,
                              input_size=input_size if window_size == 0 else (window_size, window_size))
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=act_layer)
        self.window_size = window_size

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        x = shortcut + x
        x = x + self.mlp(self.norm2(x))
        return x


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=True, use_rel_pos=False, rel_pos_zero_init=True, input_size=None):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if self.use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x):
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W))
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


def window_partition(x, window_size):
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(windows, window_size, pad_hw, hw):
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window_size // window_size)
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


def get_rel_pos(q_size, k_size, rel_pos):
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos_resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist,
                                        mode="linear")
        rel_pos_resized = rel_pos_resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        rel_pos_resized = rel_pos
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos_resized[relative_coords.long()]


def add_decomposed_rel_pos(attn, q, rel_pos_h, rel_pos_w, q_size, k_size):
    q_h, q_w = q_size
    k_h, k_w = k_size
    Rh = get_rel_pos(q_h, k_h, rel_pos_h)
    Rw = get_rel_pos(q_w, k_w, rel_pos_w)
    B, _, dim = q.shape
    r_q = q.reshape(B, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
    attn = (attn.view(B, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(
        B, q_h * q_w, k_h * k_w)
    return attn


class PatchEmbed(nn.Module):
    def __init__(self, kernel_size=(16, 16), stride=(16, 16), padding=(0, 0), in_chans=3, embed_dim=768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


# ---- prompt_encoder.py ----------------------------------------------------------------------
class PromptEncoder(nn.Module):
    def __init__(self, embed_dim, image_embedding_size, input_image_size, mask_in_chans, activation=nn.GELU):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)])
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2), LayerNorm2d(mask_in_chans // 4), activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2), LayerNorm2d(mask_in_chans),
            activation(), nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1))
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self):
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points, labels, pad):
        points = points + 0.5
        if pad:
            padding_point = torch.zeros((points.shape[0], 1, 2), device=points.device)
            padding_label = -torch.ones((labels.shape[0], 1), device=labels.device)
            points = torch.cat([points, padding_point], dim=1)
            labels = torch.cat([labels, padding_label], dim=1)
        point_embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        point_embedding[labels == -1] = 0.0
        point_embedding[labels == -1] += self.not_a_point_embed.weight
        point_embedding[labels == 0] += self.point_embeddings[0].weight
        point_embedding[labels == 1] += self.point_embeddings[1].weight
        return point_embedding

    def _embed_boxes(self, boxes):
        boxes = boxes + 0.5
        coords = boxes.reshape(-1, 2, 2)
        corner_embedding = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner_embedding[:, 0, :] += self.point_embeddings[2].weight
        corner_embedding[:, 1, :] += self.point_embeddings[3].weight
        return corner_embedding

    def forward(self, points, boxes, masks):
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        sparse_embeddings = torch.empty((bs, 0, self.embed_dim))
        if points is not None:
            coords, labels = points
            point_embeddings = self._embed_points(coords, labels, pad=(boxes is None))
            sparse_embeddings = torch.cat([sparse_embeddings, point_embeddings], dim=1)
        if boxes is not None:
            sparse_embeddings = torch.cat([sparse_embeddings, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense_embeddings = self.mask_downscaling(masks)
        else:
            dense_embeddings = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                bs, -1, self.image_embedding_size[0], self.image_embedding_size[1])
        return sparse_embeddings, dense_embeddings


class PositionEmbeddingRandom(nn.Module):
    def __init__(self, num_pos_feats=64, scale=None):
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords):
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * np.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size):
        h, w = size
        grid = torch.ones((h, w), dtype=torch.float32)
        y_embed = grid.cumsum(dim=0) - 0.5
        x_embed = grid.cumsum(dim=1) - 0.5
        y_embed = y_embed / h
        x_embed = x_embed / w
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))
        return pe.permute(2, 0, 1)

    def forward_with_coords(self, coords_input, image_size):
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords.to(torch.float))


# ---- transformer.py -------------------------------------------------------------------------
class TwoWayTransformer(nn.Module):
    def __init__(self, depth, embedding_dim, num_heads, mlp_dim, activation=nn.ReLU, attention_downsample_rate=2):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(depth):
            self.layers.append(TwoWayAttentionBlock(embedding_dim=embedding_dim, num_heads=num_heads, mlp_dim=mlp_dim,
                                                    activation=activation,
                                                    attention_downsample_rate=attention_downsample_rate,
                                                    skip_first_layer_pe=(i == 0)))
        self.final_attn_token_to_image = TAttention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        image_embedding = image_embedding.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        keys = image_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
        q = queries + point_embedding
        k = keys + image_pe
        attn_out = self.final_attn_token_to_image(q=q, k=k, v=keys)
        queries = queries + attn_out
        queries = self.norm_final_attn(queries)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, embedding_dim, num_heads, mlp_dim=2048, activation=nn.ReLU, attention_downsample_rate=2,
                 skip_first_layer_pe=False):
        super().__init__()
        self.self_attn = TAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = TAttention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = TAttention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            attn_out = self.self_attn(q=q, k=q, v=queries)
            queries = queries + attn_out
        queries = self.norm1(queries)
        q = queries + query_pe
        k = keys + key_pe
        attn_out = self.cross_attn_token_to_image(q=q, k=k, v=keys)
        queries = queries + attn_out
        queries = self.norm2(queries)
        mlp_out = self.mlp(queries)
        queries = queries + mlp_out
        queries = self.norm3(queries)
        q = queries + query_pe
        k = keys + key_pe
        attn_out = self.cross_attn_image_to_token(q=k, k=q, v=queries)
        keys = keys + attn_out
        keys = self.norm4(keys)
        return queries, keys


class TAttention(nn.Module):
    def __init__(self, embedding_dim, num_heads, downsample_rate=1):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        assert self.internal_dim % num_heads == 0
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x, num_heads):
        b, n, c = x.shape
        return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)

    def _recombine_heads(self, x):
        b, n_heads, n_tokens, c_per_head = x.shape
        return x.transpose(1, 2).reshape(b, n_tokens, n_heads * c_per_head)

    def forward(self, q, k, v):
        q = self._separate_heads(self.q_proj(q), self.num_heads)
        k = self._separate_heads(self.k_proj(k), self.num_heads)
        v = self._separate_heads(self.v_proj(v), self.num_heads)
        _, _, _, c_per_head = q.shape
        attn = q @ k.permute(0, 1, 3, 2)
        attn = attn / math.sqrt(c_per_head)
        attn = torch.softmax(attn, dim=-1)
        out = attn @ v
        return self.out_proj(self._recombine_heads(out))


# ---- mask_decoder.py ------------------------------------------------------------------------
class MaskDecoder(nn.Module):
    def __init__(self, *, transformer_dim, transformer, num_multimask_outputs=3, activation=nn.GELU, iou_head_depth=3,
                 iou_head_hidden_dim=256):
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4), activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2), activation())
        self.output_hypernetworks_mlps = nn.ModuleList(
            [MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)])
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice, :, :], iou_pred[:, mask_slice]

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                      batched_images=False):
        # batched_images (not in the official code; mirrors mask_decoder.ts): one image per prompt set.
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        n = tokens.shape[0]
        src = image_embeddings if batched_images else torch.repeat_interleave(image_embeddings, n, dim=0)
        src = src + dense_prompt_embeddings
        pos_src = image_pe.expand(n, -1, -1, -1) if batched_images else torch.repeat_interleave(image_pe, n, dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1: (1 + self.num_mask_tokens), :]
        src = src.transpose(1, 2).view(b, c, h, w)
        upscaled_embedding = self.output_upscaling(src)
        hyper_in_list = [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(self.num_mask_tokens)]
        hyper_in = torch.stack(hyper_in_list, dim=1)
        b, c, h, w = upscaled_embedding.shape
        masks = (hyper_in @ upscaled_embedding.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


class MLP(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim, num_layers, sigmoid_output=False):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))
        self.sigmoid_output = sigmoid_output

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


# ---- sam.py / build_sam.py / predictor.py ---------------------------------------------------
class Sam(nn.Module):
    mask_threshold = 0.0

    def __init__(self, image_encoder, prompt_encoder, mask_decoder, pixel_mean, pixel_std):
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.Tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.Tensor(pixel_std).view(-1, 1, 1), False)

    def postprocess_masks(self, masks, input_size, original_size):
        masks = F.interpolate(masks, (self.image_encoder.img_size, self.image_encoder.img_size), mode="bilinear",
                              align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)

    def preprocess(self, x):
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_encoder.img_size - w, 0, self.image_encoder.img_size - h))


def build(c):
    from functools import partial
    grid = c['img_size'] // c['patch_size']
    return Sam(
        ImageEncoderViT(depth=c['depth'], embed_dim=c['embed_dim'], img_size=c['img_size'], mlp_ratio=c['mlp_ratio'],
                        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=c['num_heads'],
                        patch_size=c['patch_size'], qkv_bias=True, use_rel_pos=True,
                        global_attn_indexes=c['global_attn_indexes'], window_size=c['window_size'],
                        out_chans=c['prompt_embed_dim']),
        PromptEncoder(embed_dim=c['prompt_embed_dim'], image_embedding_size=(grid, grid),
                      input_image_size=(c['img_size'], c['img_size']), mask_in_chans=c['mask_in_chans']),
        MaskDecoder(num_multimask_outputs=3,
                    transformer=TwoWayTransformer(depth=c['decoder_depth'], embedding_dim=c['prompt_embed_dim'],
                                                  mlp_dim=c['decoder_mlp_dim'], num_heads=c['decoder_heads']),
                    transformer_dim=c['prompt_embed_dim'], iou_head_depth=3,
                    iou_head_hidden_dim=c['iou_head_hidden_dim']),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def perturb(m):
    """Random weights: no value a trivial 0 or 1 (pos_embed and rel-pos start at zero in SAM)."""
    with torch.no_grad():
        for n, p in list(m.named_parameters()) + list(m.named_buffers()):
            if p.is_floating_point() and not n.startswith('pixel_'):
                p.add_(torch.randn_like(p) * 0.1)


def predict_torch(sam, features, input_size, original_size, coords=None, labels=None, boxes=None, mask_input=None,
                  multimask=True):
    points = (coords, labels) if coords is not None else None
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    low, iou = sam.mask_decoder(features, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask)
    return sam.postprocess_masks(low, input_size, original_size), iou, low


def resize_for(sam_ckpt_sd, model, global_idx, token_size):
    """Loading at another input size, as SAM fine-tuning code does (SAMed / SAM-Med2D): bilinear
    pos_embed, bilinear (= linear along the length) rel-pos of the GLOBAL blocks, chosen by index."""
    sd = dict(sam_ckpt_sd)
    pe = sd['image_encoder.pos_embed'].permute(0, 3, 1, 2)
    sd['image_encoder.pos_embed'] = F.interpolate(pe, (token_size, token_size), mode='bilinear',
                                                  align_corners=False).permute(0, 2, 3, 1)
    for i in global_idx:
        for hw in 'hw':
            k = f'image_encoder.blocks.{i}.attn.rel_pos_{hw}'
            r = sd[k]
            sd[k] = F.interpolate(r[None, None], (2 * token_size - 1, r.shape[1]), mode='bilinear',
                                  align_corners=False)[0, 0]
    model.load_state_dict(sd)


GRAD_PARAMS = ['image_encoder.pos_embed', 'image_encoder.blocks.0.attn.qkv.weight', 'image_encoder.blocks.1.attn.rel_pos_h',
               'image_encoder.blocks.0.attn.rel_pos_w', 'image_encoder.neck.1.weight', 'prompt_encoder.point_embeddings.1.weight',
               'prompt_encoder.not_a_point_embed.weight', 'mask_decoder.transformer.layers.0.cross_attn_image_to_token.q_proj.weight',
               'mask_decoder.output_hypernetworks_mlps.2.layers.0.weight', 'mask_decoder.iou_prediction_head.layers.2.bias']


def grad_check(sam, img, resized_hw, original_size, p, io):
    """Gradients of sum(low_res_logits * G) + sum(iou * g) through the whole model for prompt p."""
    sam.zero_grad()
    feats = sam.image_encoder(sam.preprocess(img))
    _, iou, low = predict_torch(sam, feats, tuple(resized_hw), tuple(original_size), coords=p['coords'],
                                labels=p['labels'], multimask=p['multimask'])
    G, g = torch.randn(low.shape), torch.randn(iou.shape)
    ((low * G).sum() + (iou * g).sum()).backward()
    io['grad.G'], io['grad.g'] = G, g
    named = dict(sam.named_parameters())
    for k in GRAD_PARAMS:
        io[f'grad.{k}'] = named[k].grad


def run_case(name, cfg, out_dir, resized_hw, original_size, prompts, run_img_size=None, weights_format='safetensors', grads=False):
    torch.manual_seed(sum(map(ord, name)))
    sam = build(cfg)
    perturb(sam)
    sd = sam.state_dict()
    if weights_format == 'pth':
        torch.save(sd, os.path.join(out_dir, f'{name}.weights.pth'))
    else:
        st.save(os.path.join(out_dir, f'{name}.weights.safetensors'), sd)
    if run_img_size is not None:
        cfg2 = dict(cfg, img_size=run_img_size)
        sam = build(cfg2)
        resize_for(sd, sam, cfg['global_attn_indexes'], run_img_size // cfg['patch_size'])
    io = {}
    img = torch.randint(0, 256, (1, 3) + tuple(resized_hw), dtype=torch.uint8)
    io['resized_image'] = img
    io['original_size'] = torch.tensor(original_size, dtype=torch.int64)
    with torch.no_grad():
        x = sam.preprocess(img)
        feats = sam.image_encoder(x)
        io['input_tensor'] = x
        io['image_embeddings'] = feats
        for i, p in enumerate(prompts):
            args = {}
            for k in ('coords', 'labels', 'boxes', 'mask_input'):
                if k in p:
                    args[k] = p[k]
                    io[f'p{i}.{k}'] = p[k].long() if k == 'labels' else p[k]
            if 'mask_from' in p:
                low = io[f'p{p["mask_from"]}.low_res_logits']
                best = io[f'p{p["mask_from"]}.iou_predictions'].argmax(1)
                args['mask_input'] = low[torch.arange(low.shape[0]), best][:, None]
                io[f'p{i}.mask_input'] = args['mask_input']
            logits, iou, low = predict_torch(sam, feats, tuple(resized_hw), tuple(original_size),
                                             multimask=p['multimask'], **args)
            io[f'p{i}.mask_logits'] = logits
            io[f'p{i}.iou_predictions'] = iou
            io[f'p{i}.low_res_logits'] = low
    if grads:
        grad_check(sam, img, resized_hw, original_size, prompts[0], io)
    st.save(os.path.join(out_dir, f'{name}.io.safetensors'), io)


def block_case(out_dir):
    """get_rel_pos interpolation at run time (a global block on another grid) and a windowed block
    padding both dimensions."""
    torch.manual_seed(7)
    io = {}
    g = Block(24, 3, mlp_ratio=2.0, norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6), use_rel_pos=True, window_size=0,
              input_size=(6, 6))
    w = Block(24, 3, mlp_ratio=2.0, norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6), use_rel_pos=True, window_size=4,
              input_size=(6, 6))
    perturb(g)
    perturb(w)
    x = torch.randn(2, 9, 7, 24)
    with torch.no_grad():
        io['x'] = x
        io['global_out'] = g(x)
        io['window_out'] = w(x)
    for k, v in g.state_dict().items():
        io[f'global.{k}'] = v
    for k, v in w.state_dict().items():
        io[f'window.{k}'] = v
    st.save(os.path.join(out_dir, 'blocks.io.safetensors'), io)


def main():
    out = sys.argv[1]
    f = torch.float32
    # A: patch 8, 16×16 tokens, window 5 (padded to 20), global block 1, mlp_ratio 2.5, non-square image.
    a = dict(img_size=128, patch_size=8, embed_dim=48, depth=3, num_heads=3, mlp_ratio=2.5, window_size=5,
             global_attn_indexes=[1], prompt_embed_dim=32, mask_in_chans=8, decoder_depth=1, decoder_mlp_dim=40,
             decoder_heads=4, iou_head_hidden_dim=24)
    run_case('a', a, out, (128, 77), (300, 180), [
        # points with an explicit padding label; no box, so one more padding point is appended
        dict(coords=torch.tensor([[[10.5, 20.25], [60.0, 100.0], [0.0, 0.0]]], dtype=f),
             labels=torch.tensor([[1, 0, -1]], dtype=torch.int32), multimask=True),
        # two boxes at once
        dict(boxes=torch.tensor([[5.0, 8.0, 70.0, 120.0], [20.0, 30.0, 40.0, 60.0]], dtype=f), multimask=False),
        # points + box + the best mask of prompt 0 fed back
        dict(coords=torch.tensor([[[33.0, 44.0]]], dtype=f), labels=torch.tensor([[1]], dtype=torch.int32),
             boxes=torch.tensor([[5.0, 8.0, 70.0, 120.0]], dtype=f), mask_from=0, multimask=False),
    ], weights_format='pth', grads=True)
    # B: checkpoint at 256 (16×16 tokens), run at 128 (8×8): pos_embed and global rel-pos (blocks 0
    # and 2) interpolated; window 7 pads 8 → 14.
    b = dict(img_size=256, patch_size=16, embed_dim=32, depth=3, num_heads=2, mlp_ratio=4.0, window_size=7,
             global_attn_indexes=[0, 2], prompt_embed_dim=16, mask_in_chans=4, decoder_depth=2, decoder_mlp_dim=24,
             decoder_heads=2, iou_head_hidden_dim=16)
    run_case('b', b, out, (90, 128), (180, 256), [
        dict(coords=torch.tensor([[[50.0, 40.0], [100.0, 20.0]]], dtype=f), labels=torch.tensor([[1, 1]], dtype=torch.int32),
             multimask=True),
        dict(mask_input=torch.randn(1, 1, 32, 32), multimask=True),
    ], run_img_size=128)
    # C: all blocks global (window_size 0), 4×4 tokens, mask input only.
    c = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=4, mlp_ratio=4.0, window_size=0,
             global_attn_indexes=[], prompt_embed_dim=16, mask_in_chans=8, decoder_depth=2, decoder_mlp_dim=32,
             decoder_heads=1, iou_head_hidden_dim=8)
    run_case('c', c, out, (64, 64), (64, 64), [
        dict(boxes=torch.tensor([[0.0, 0.0, 63.0, 63.0]], dtype=f), mask_input=torch.randn(1, 1, 16, 16), multimask=True),
        dict(multimask=False),
    ])
    block_case(out)


if __name__ == '__main__':
    main()
