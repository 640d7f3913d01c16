#!/usr/bin/env python3
"""Generate PyTorch reference fixtures for wesam's numerical parity tests.

wesam ports Segment Anything (SAM) and the WeSAM LoRA adaptation to candle.
To check the Rust implementation we need reference outputs computed by the
*official* ``segment_anything`` PyTorch code.  Real checkpoints are far too big
to commit, so this script builds a tiny SAM (same architecture, tiny sizes),
fills EVERY weight with seeded random values (zero-initialised tables such as
``pos_embed`` and ``rel_pos_*`` would hide bugs), and records inputs and
outputs of the official modules.

Default mode writes ``tests/fixtures/tiny/``:

``model.safetensors``
    Base weights under the official ``Sam.state_dict()`` keys; metadata
    ``wesam.config`` = JSON of the model configuration.
``model.pth``
    The same weights as ``torch.save(state_dict)``, the format of the official
    ``sam_vit_b_01ec64.pth``.
``lora.safetensors``
    LoRA adapters ``image_encoder.blocks.{i}.attn.qkv.lora_{a,b}_{q,v}``
    (A: [r, D], B: [D, r]); metadata ``wesam.lora`` = {"rank", "scale", "blocks"}.
    wesam's LoRA: ``qkv(x)[..., :D] += s*(x A_q^T) B_q^T`` and
    ``qkv(x)[..., 2D:] += s*(x A_v^T) B_v^T``.
``model_hf.safetensors`` / ``hf_keys.txt``
    The same base weights in the HuggingFace ``transformers.SamModel`` layout
    (verified by a strict load and by comparing outputs), plus the key mapping
    ``hf_key official_key shape`` for the Rust loader.
``cases.safetensors``
    Inputs and reference outputs: image encoder with and without LoRA, prompt
    encoder + mask decoder for box / points / box+points / mask+box prompts in
    single- and multi-mask mode, the gradients of a dice+BCE loss w.r.t. every
    LoRA tensor, the encoder at a different input size (96, bicubic-resized
    ``pos_embed``), the end-to-end ``SamPredictor`` on ``image.png`` and the
    WeSAM reference-adaptation preprocessing of ``image.png``.
``image.png``
    A small seeded synthetic RGB image (90 x 130) used by the predictor cases.

Running the default mode twice produces byte-identical files (on the same
machine; it runs single-threaded so the reduction order is fixed).  It needs
torch, torchvision, numpy, Pillow, safetensors, segment_anything and, for
``model_hf.safetensors``, transformers.

Other modes:

``--check-merged FILE``
    FILE is a merged model written by wesam (official keys, ``wesam.config``
    metadata, LoRA folded into ``attn.qkv``).  It is loaded into the official
    ``Sam`` (strict) and compared with the base model + fixture LoRA (wrapper).
    Exits non-zero if the max abs difference exceeds 1e-4.  The reference
    fixture directory is ``--fixture-dir`` (default tests/fixtures/tiny; use
    the ``--out`` directory of a ``--vit-b`` run for a ViT-B merge).
``--write-merged FILE``
    Writes the reference merge (base + fixture LoRA folded into ``attn.qkv``)
    so that ``--check-merged`` itself can be sanity-checked.
``--vit-b --out DIR [--image-size 1024]``
    Like the default but for the official ViT-B configuration with random
    weights (model, lora and a reduced cases file).  Not committed; slow on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import struct
import sys
from collections import OrderedDict
from functools import partial
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save as safetensors_bytes
from torchvision.transforms import functional as TF

from segment_anything import SamPredictor
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import Attention as EncoderAttention
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from segment_anything.utils.transforms import ResizeLongestSide

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "tiny")

# Field order here is the order written into the ``wesam.config`` JSON.
TINY_CONFIG = OrderedDict(
    encoder_embed_dim=48,
    encoder_depth=3,
    encoder_num_heads=2,
    encoder_global_attn_indexes=[1],
    prompt_embed_dim=32,
    image_size=128,
    vit_patch_size=16,
    window_size=3,  # 8x8 token grid is not divisible by 3 -> window padding
    mlp_ratio=4.0,
    mask_in_chans=8,
    decoder_depth=2,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_depth=3,
    iou_head_hidden_dim=32,
    num_multimask_outputs=3,
)

VIT_B_CONFIG = OrderedDict(
    encoder_embed_dim=768,
    encoder_depth=12,
    encoder_num_heads=12,
    encoder_global_attn_indexes=[2, 5, 8, 11],
    prompt_embed_dim=256,
    image_size=1024,
    vit_patch_size=16,
    window_size=14,
    mlp_ratio=4.0,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_mlp_dim=2048,
    decoder_num_heads=8,
    iou_head_depth=3,
    iou_head_hidden_dim=256,
    num_multimask_outputs=3,
)

LORA_RANK = 4
LORA_SCALE = 1.0

WEIGHT_SEED = 20240601
LORA_SEED = 20240602
CASE_SEED = 20240603
IMAGE_SEED = 20240604

TOLERANCE = 1e-4  # --check-merged threshold

TOLERANCE_NOTE = (
    "float32 CPU references from the official segment_anything modules. Suggested "
    "parity tolerances: max abs diff <= 1e-4 for embeddings, low-res logits, iou and "
    "predict.masks; gradients: max abs diff <= 1e-3 * max|grad| of that tensor "
    "(the loss is a scalar mean, expect ~1e-5 abs). ref_preprocess.input and "
    "predict.input come from PIL's uint8 antialiased bilinear resize: an exact port "
    "matches bit-for-bit, a float resize differs by up to a few 1/255 steps."
)


# --------------------------------------------------------------------------
# Deterministic safetensors writing
# --------------------------------------------------------------------------


def save_file(tensors: Dict[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """safetensors.torch.save_file with a byte-reproducible header.

    safetensors (0.8) keeps ``__metadata__`` in a hash map, so with more than
    one metadata entry their order in the JSON header changes from process to
    process.  Re-serialise the header with the entries sorted; tensor order and
    data offsets are already deterministic and are left untouched.
    """
    raw = safetensors_bytes(dict(tensors), metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[8 + n :])


# --------------------------------------------------------------------------
# Model construction and random weights
# --------------------------------------------------------------------------


def build_sam(cfg: Dict) -> Sam:
    """Build the official Sam from a wesam config, as segment_anything's builder does."""
    embed = cfg["image_size"] // cfg["vit_patch_size"]
    prompt_dim = cfg["prompt_embed_dim"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=cfg["encoder_depth"],
            embed_dim=cfg["encoder_embed_dim"],
            img_size=cfg["image_size"],
            mlp_ratio=cfg["mlp_ratio"],
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=cfg["encoder_num_heads"],
            patch_size=cfg["vit_patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(cfg["encoder_global_attn_indexes"]),
            window_size=cfg["window_size"],
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(embed, embed),
            input_image_size=(cfg["image_size"], cfg["image_size"]),
            mask_in_chans=cfg["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=cfg["decoder_depth"],
                embedding_dim=prompt_dim,
                mlp_dim=cfg["decoder_mlp_dim"],
                num_heads=cfg["decoder_num_heads"],
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=cfg["iou_head_depth"],
            iou_head_hidden_dim=cfg["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    return sam


def _random_tensor(
    module: nn.Module, name: str, t: torch.Tensor, gen: torch.Generator, linear_gain: float = 1.0
) -> torch.Tensor:
    """Random value for one parameter/buffer, scaled so activations stay O(1)."""

    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return mean + std * torch.randn(t.shape, generator=gen, dtype=torch.float32)

    if isinstance(module, nn.Linear):
        return normal(linear_gain / math.sqrt(module.in_features)) if name == "weight" else normal(0.1)
    if isinstance(module, nn.ConvTranspose2d):
        # weight [in, out, kh, kw]; with stride == kernel every output pixel sees
        # exactly one tap per input channel, so the fan-in is in*kh*kw/(sh*sw).
        if name == "weight":
            kh, kw = module.kernel_size
            sh, sw = module.stride
            return normal(1.0 / math.sqrt(module.in_channels * kh * kw / (sh * sw)))
        return normal(0.1)
    if isinstance(module, nn.Conv2d):
        if name == "weight":
            kh, kw = module.kernel_size
            return normal(1.0 / math.sqrt(module.in_channels * kh * kw))
        return normal(0.1)
    if isinstance(module, (nn.LayerNorm, LayerNorm2d)):
        return normal(0.1, mean=1.0) if name == "weight" else normal(0.1)
    if isinstance(module, nn.Embedding):
        return normal(1.0)
    if isinstance(module, ImageEncoderViT) and name == "pos_embed":
        return normal(0.5)
    if isinstance(module, EncoderAttention) and name in ("rel_pos_h", "rel_pos_w"):
        return normal(0.3)
    if isinstance(module, PositionEmbeddingRandom) and name == "positional_encoding_gaussian_matrix":
        return normal(1.0)  # same distribution as the official initialisation
    raise ValueError(f"no randomisation rule for {type(module).__name__}.{name}")


@torch.no_grad()
def randomize_(sam: Sam, seed: int) -> None:
    """Overwrite every state_dict entry of ``sam`` with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    expected = set(sam.state_dict().keys())
    # Mask logits are dot products of a 3-layer ReLU MLP output (hypernetwork)
    # with the C = dim/8 upscaled channels, i.e. they scale like gain^3 * sqrt(C).
    # With plain 1/sqrt(fan_in) weights the tiny model's logits have std ~0.1;
    # this gain brings them to std ~1-2 (max ~10): informative, not saturated.
    upscaled_channels = sam.mask_decoder.transformer_dim // 8
    hyper_gain = 2.0 * (4.0 / upscaled_channels) ** (1.0 / 6.0)
    done = set()
    for mod_name, module in sam.named_modules():
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        for name, t in tensors:
            key = f"{mod_name}.{name}" if mod_name else name
            if key not in expected:
                # pixel_mean / pixel_std are non-persistent buffers: not saved, keep defaults
                continue
            gain = hyper_gain if mod_name.startswith("mask_decoder.output_hypernetworks_mlps.") else 1.0
            t.copy_(_random_tensor(module, name, t, gen, linear_gain=gain))
            done.add(key)
    missing = expected - done
    assert not missing, f"state_dict entries left un-randomised: {sorted(missing)}"


def make_random_sam(cfg: Dict, seed: int = WEIGHT_SEED) -> Sam:
    sam = build_sam(cfg)
    randomize_(sam, seed)
    return sam


def state_dict_tensors(sam: Sam) -> "OrderedDict[str, torch.Tensor]":
    """Contiguous, non-shared copies of the state dict (as safetensors needs)."""
    return OrderedDict((k, v.detach().clone().contiguous()) for k, v in sam.state_dict().items())


def config_json(cfg: Dict) -> str:
    out = OrderedDict()
    for k, v in cfg.items():
        if k == "mlp_ratio":
            v = float(v)
        elif k == "encoder_global_attn_indexes":
            v = [int(i) for i in v]
        out[k] = v
    return json.dumps(out)


def config_from_json(text: str) -> "OrderedDict":
    cfg = json.loads(text, object_pairs_hook=OrderedDict)
    missing = set(TINY_CONFIG) - set(cfg)
    if missing:
        raise ValueError(f"wesam.config lacks fields {sorted(missing)}")
    return cfg


# --------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------


def lora_names(block: int) -> Tuple[str, str, str, str]:
    p = f"image_encoder.blocks.{block}.attn.qkv."
    return p + "lora_a_q", p + "lora_b_q", p + "lora_a_v", p + "lora_b_v"


def make_lora(cfg: Dict, seed: int = LORA_SEED, rank: int = LORA_RANK) -> "OrderedDict[str, torch.Tensor]":
    """Random non-zero LoRA tensors (B non-zero too, so that A receives gradients)."""
    gen = torch.Generator().manual_seed(seed)
    d = cfg["encoder_embed_dim"]
    lora = OrderedDict()
    for i in range(cfg["encoder_depth"]):
        a_q, b_q, a_v, b_v = lora_names(i)
        lora[a_q] = torch.randn(rank, d, generator=gen) / math.sqrt(d)
        lora[b_q] = 0.1 * torch.randn(d, rank, generator=gen)
        lora[a_v] = torch.randn(rank, d, generator=gen) / math.sqrt(d)
        lora[b_v] = 0.1 * torch.randn(d, rank, generator=gen)
    return lora


class LoRAQKV(nn.Module):
    """Wraps an encoder ``attn.qkv`` Linear(D, 3D) with wesam's q/v LoRA."""

    def __init__(self, base: nn.Linear, a_q, b_q, a_v, b_v, scale: float) -> None:
        super().__init__()
        self.base = base
        self.a_q, self.b_q, self.a_v, self.b_v = a_q, b_q, a_v, b_v
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        dq = self.scale * ((x @ self.a_q.t()) @ self.b_q.t())
        dv = self.scale * ((x @ self.a_v.t()) @ self.b_v.t())
        return out + torch.cat([dq, torch.zeros_like(dq), dv], dim=-1)


@contextlib.contextmanager
def lora_enabled(sam: Sam, lora: Dict[str, torch.Tensor], scale: float = LORA_SCALE) -> Iterator[None]:
    """Temporarily wrap every encoder block's attn.qkv with the given LoRA tensors."""
    blocks = sam.image_encoder.blocks
    originals = [blk.attn.qkv for blk in blocks]
    try:
        for i, blk in enumerate(blocks):
            names = lora_names(i)
            blk.attn.qkv = LoRAQKV(originals[i], *(lora[n] for n in names), scale=scale)
        yield
    finally:
        for blk, qkv in zip(blocks, originals):
            blk.attn.qkv = qkv


@torch.no_grad()
def merge_lora(sam: Sam, lora: Dict[str, torch.Tensor], scale: float = LORA_SCALE) -> "OrderedDict[str, torch.Tensor]":
    """State dict with the LoRA folded into attn.qkv.weight (reference for wesam's merge)."""
    sd = state_dict_tensors(sam)
    d = sam.image_encoder.blocks[0].attn.qkv.in_features
    for i in range(len(sam.image_encoder.blocks)):
        a_q, b_q, a_v, b_v = (lora[n] for n in lora_names(i))
        w = sd[f"image_encoder.blocks.{i}.attn.qkv.weight"]
        w[0:d] += scale * (b_q @ a_q)
        w[2 * d : 3 * d] += scale * (b_v @ a_v)
    return sd


# --------------------------------------------------------------------------
# Model evaluation helpers
# --------------------------------------------------------------------------


def decode(
    sam: Sam,
    embed: torch.Tensor,
    points: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    boxes: Optional[torch.Tensor] = None,
    masks: Optional[torch.Tensor] = None,
    multimask: bool = False,
    prompt_encoder: Optional[PromptEncoder] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Official prompt encoder + mask decoder (as SamPredictor.predict_torch does)."""
    pe = prompt_encoder if prompt_encoder is not None else sam.prompt_encoder
    sparse, dense = pe(points=points, boxes=boxes, masks=masks)
    return sam.mask_decoder(
        image_embeddings=embed,
        image_pe=pe.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    dice = 1.0 - (2.0 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return dice + bce


def lora_gradients(
    sam: Sam, lora: Dict[str, torch.Tensor], image: torch.Tensor, box: torch.Tensor, target: torch.Tensor
) -> Tuple[torch.Tensor, "OrderedDict[str, torch.Tensor]"]:
    """d(dice+bce)/d(LoRA) for a box prompt, single mask, LoRA on."""
    params = OrderedDict((k, v.detach().clone().requires_grad_(True)) for k, v in lora.items())
    saved = [(p, p.requires_grad) for p in sam.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        with torch.enable_grad(), lora_enabled(sam, params):
            embed = sam.image_encoder(image)
            low_res, _ = decode(sam, embed, boxes=box)
            loss = dice_bce_loss(low_res, target)
            grads = torch.autograd.grad(loss, list(params.values()))
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
    return loss.detach().reshape(1), OrderedDict((k, g.contiguous()) for k, g in zip(params, grads))


def weight_gradients(
    sam: Sam, image: torch.Tensor, box: torch.Tensor, points: Tuple[torch.Tensor, torch.Tensor],
    mask_input: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, "OrderedDict[str, torch.Tensor]"]:
    """d(loss)/d(every parameter) with LoRA off, for a loss whose prompts reach every parameter:
    (a) box + points (labels 1, 0 and -1) + mask input, three masks; (b) points alone, one mask
    (the padding point and the no-mask embedding). Per case, dice+bce of the low-res logits
    against disc targets plus the mean squared IoU prediction. Returns the loss, the targets and
    the gradients by parameter name (buffers such as the Fourier matrix are not parameters)."""
    coords, labels = points
    labels_a = labels.clone()
    labels_a[0, 2] = -1.0
    params = OrderedDict(sam.named_parameters())
    with torch.enable_grad():
        embed = sam.image_encoder(image)
        low_a, iou_a = decode(sam, embed, points=(coords, labels_a), boxes=box, masks=mask_input, multimask=True)
        target = disc_targets(coords.shape[0], low_a.shape[-1])
        loss = dice_bce_loss(low_a, target.expand_as(low_a)) + (iou_a ** 2).mean()
        low_b, iou_b = decode(sam, embed, points=(coords, labels))
        loss = loss + dice_bce_loss(low_b, target) + (iou_b ** 2).mean()
        grads = torch.autograd.grad(loss, list(params.values()))
    out = OrderedDict((k, g.contiguous()) for k, g in zip(params, grads))
    return loss.detach().reshape(1), labels_a, out


def wesam_step_gradients(
    sam: Sam, lora: Dict[str, torch.Tensor], weak: torch.Tensor, strong: torch.Tensor, box: torch.Tensor
) -> Tuple[torch.Tensor, "OrderedDict[str, torch.Tensor]"]:
    """d(WeSAM total loss)/d(LoRA) of one self-training step (`docs/method.md` §1.3, `sam` profile,
    losses on the low-res logits, the loss functions of scripts/make_loss_fixture.py): the anchor
    (LoRA off, no graph) and the teacher on `weak`, the student on `strong`, box prompts."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_loss_fixture as L

    params = OrderedDict((k, v.detach().clone().requires_grad_(True)) for k, v in lora.items())
    saved = [(p, p.requires_grad) for p in sam.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            e_a = sam.image_encoder(weak)
            low_a, _ = decode(sam, e_a, boxes=box)
        with torch.enable_grad(), lora_enabled(sam, params):
            e_t = sam.image_encoder(weak)
            low_t, _ = decode(sam, e_t, boxes=box)
            e_s = sam.image_encoder(strong)
            low_s, iou_s = decode(sam, e_s, boxes=box)
            n = box.shape[0]
            s_m, t_m, a_m = low_s[:, 0], low_t[:, 0], low_a[:, 0]
            t_bin, a_bin = (t_m > 0).float(), (a_m > 0).float()
            terms = dict(
                focal=L.focal(s_m, t_bin, 0.8),
                dice=L.dice(s_m, t_bin, 1.0),
                iou=((iou_s - L.calc_iou(s_m.detach(), t_bin, lambda x: x > 0)) ** 2).sum() / n,
                anchor=0.5 * L.dice(s_m, a_bin) + 0.5 * L.dice(t_m, a_bin),
                contra=L.contra(e_t[0], e_a[0], low_t.detach(), low_a.detach()),
            )
            total = sum(L.WEIGHTS[k] * v for k, v in terms.items())
            grads = torch.autograd.grad(total, list(params.values()))
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
    return total.detach().reshape(1), OrderedDict((k, g.contiguous()) for k, g in zip(params, grads))


def disc_targets(n: int, size: int) -> torch.Tensor:
    """Fixed binary masks (one disc per instance) of shape [n, 1, size, size]."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    discs = [(0.45, 0.45, 0.25), (0.6, 0.35, 0.2), (0.3, 0.7, 0.15)]
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        cx, cy, r = discs[i % len(discs)]
        inside = (xx + 0.5 - cx * size) ** 2 + (yy + 0.5 - cy * size) ** 2 <= (r * size) ** 2
        out[i, 0] = inside.float()
    return out


def encode_at_size(sam: Sam, image: torch.Tensor) -> torch.Tensor:
    """Image encoder at a non-native square input size.

    The absolute position embedding is resized bicubically ([1,D,h,w] ->
    [1,D,h',w'], align_corners=False); the rel-pos tables are left untouched
    (the official get_rel_pos interpolates them linearly at run time).
    """
    enc = sam.image_encoder
    patch = enc.patch_embed.proj.kernel_size[0]
    gh, gw = image.shape[-2] // patch, image.shape[-1] // patch
    original = enc.pos_embed
    resized = F.interpolate(original.permute(0, 3, 1, 2), size=(gh, gw), mode="bicubic", align_corners=False)
    try:
        enc.pos_embed = nn.Parameter(resized.permute(0, 2, 3, 1).contiguous(), requires_grad=False)
        return enc(image)
    finally:
        enc.pos_embed = original


def resized_prompt_encoder(sam: Sam, input_size: int) -> PromptEncoder:
    """Copy of the prompt encoder configured for a square input of ``input_size``."""
    pe = copy.deepcopy(sam.prompt_encoder)
    grid = input_size // sam.image_encoder.patch_embed.proj.kernel_size[0]
    pe.input_image_size = (input_size, input_size)
    pe.image_embedding_size = (grid, grid)
    pe.mask_input_size = (4 * grid, 4 * grid)
    return pe


def summarize(name: str, t: torch.Tensor) -> None:
    t = t.detach().float()
    sat = (t.abs() > 10).float().mean().item()
    print(f"  {name:28s} shape={tuple(t.shape)} mean={t.mean().item():+.3f} std={t.std().item():.3f} "
          f"min={t.min().item():+.3f} max={t.max().item():+.3f} |x|>10: {100 * sat:.1f}%")


# --------------------------------------------------------------------------
# Synthetic image, predictor and reference preprocessing
# --------------------------------------------------------------------------


def synthetic_image(h: int = 90, w: int = 130, seed: int = IMAGE_SEED) -> np.ndarray:
    """Seeded RGB uint8 image with gradients, soft blobs, a hard-edged box and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    img[..., 0] = 40 + 120 * xx / (w - 1)
    img[..., 1] = 60 + 100 * yy / (h - 1)
    img[..., 2] = 90 + 40 * np.sin(xx / 9.0) * np.cos(yy / 7.0)
    for _ in range(4):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(8, 22)
        color = rng.uniform(-120, 120, size=3)
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None] * color
    img[20:45, 70:105] = [230, 40, 50]  # sharp-edged rectangle
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def reference_preprocess(pil_image: Image.Image, size: int) -> torch.Tensor:
    """WeSAM reference-adaptation preprocessing: resize longest side, ToTensor, centred zero pad."""
    w, h = pil_image.size
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(h, w, size)
    resized = TF.resize(pil_image, [new_h, new_w])  # PIL input -> antialiased bilinear
    x = TF.to_tensor(resized)  # [3, new_h, new_w] in [0, 1]
    pad_w, pad_h = (size - new_w) // 2, (size - new_h) // 2
    x = F.pad(x, (pad_w, size - new_w - pad_w, pad_h, size - new_h - pad_h))
    return x.unsqueeze(0)


def run_predictor(sam: Sam, np_image: np.ndarray, box, points, labels, multimask: bool):
    """SamPredictor end to end; also captures the exact tensor fed to the image encoder."""
    captured = {}

    def hook(_module, args):
        captured["input"] = args[0].detach().clone()

    handle = sam.image_encoder.register_forward_pre_hook(hook)
    try:
        predictor = SamPredictor(sam)
        predictor.set_image(np_image)  # RGB
    finally:
        handle.remove()
    masks, iou, low_res = predictor.predict(
        point_coords=points, point_labels=labels, box=box, multimask_output=multimask, return_logits=True
    )
    return (
        captured["input"],
        torch.from_numpy(masks).float(),
        torch.from_numpy(iou).float(),
        torch.from_numpy(low_res).float().unsqueeze(0),  # [1, C, 32, 32] as predict_torch returns it
    )


# --------------------------------------------------------------------------
# HuggingFace transformers layout
# --------------------------------------------------------------------------


def official_to_hf_key(key: str) -> str:
    """Map an official segment_anything key to the transformers SamModel key."""
    parts = key.split(".")
    top, rest = parts[0], parts[1:]
    if top == "image_encoder":
        out = ["vision_encoder"]
        if rest[:2] == ["patch_embed", "proj"]:
            return ".".join(out + ["patch_embed", "projection"] + rest[2:])
        if rest[0] == "blocks":
            rest = ["layers"] + rest[1:]
            rest = [{"norm1": "layer_norm1", "norm2": "layer_norm2"}.get(p, p) for p in rest]
            return ".".join(out + rest)
        if rest[0] == "neck":
            neck = {"0": "conv1", "1": "layer_norm1", "2": "conv2", "3": "layer_norm2"}[rest[1]]
            return ".".join(out + ["neck", neck] + rest[2:])
        return ".".join(out + rest)  # pos_embed
    if top == "prompt_encoder":
        if rest[0] == "pe_layer":
            return "prompt_encoder.shared_embedding.positional_embedding"
        if rest[0] == "point_embeddings":
            return ".".join(["prompt_encoder", "point_embed"] + rest[1:])
        if rest[0] == "mask_downscaling":
            sub = {"0": "conv1", "1": "layer_norm1", "3": "conv2", "4": "layer_norm2", "6": "conv3"}[rest[1]]
            return ".".join(["prompt_encoder", "mask_embed", sub] + rest[2:])
        return key  # no_mask_embed, not_a_point_embed
    if top == "mask_decoder":
        if rest[0] == "transformer":
            rest = [{"norm1": "layer_norm1", "norm2": "layer_norm2", "norm3": "layer_norm3",
                     "norm4": "layer_norm4", "norm_final_attn": "layer_norm_final_attn"}.get(p, p) for p in rest]
            return ".".join(["mask_decoder"] + rest)
        if rest[0] == "output_upscaling":
            sub = {"0": "upscale_conv1", "1": "upscale_layer_norm", "3": "upscale_conv2"}[rest[1]]
            return ".".join(["mask_decoder", sub] + rest[2:])
        return key  # iou_token, mask_tokens, MLP heads (handled by the caller)
    raise KeyError(key)


def official_to_hf(sd: Dict[str, torch.Tensor], cfg: Dict) -> "OrderedDict[str, Tuple[str, torch.Tensor]]":
    """Returns {hf_key: (official_key, tensor)}.

    The official MLP (``layers.0 .. layers.{n-1}``) becomes HF's SamFeedForward
    (``proj_in``, ``layers.0 .. layers.{n-3}``, ``proj_out``).
    """
    out = OrderedDict()
    for key, t in sd.items():
        hf = official_to_hf_key(key)
        parts = hf.split(".")
        if parts[0] == "mask_decoder" and parts[1] in ("iou_prediction_head", "output_hypernetworks_mlps"):
            head_len = 3 if parts[1] == "output_hypernetworks_mlps" else 2
            depth = cfg["iou_head_depth"] if parts[1] == "iou_prediction_head" else 3
            assert parts[head_len] == "layers", hf
            idx = int(parts[head_len + 1])
            new = ["proj_in"] if idx == 0 else ["proj_out"] if idx == depth - 1 else ["layers", str(idx - 1)]
            hf = ".".join(parts[:head_len] + new + parts[head_len + 2 :])
        out[hf] = (key, t)
    # HF keeps the random-Fourier matrix twice (tied): once on the model, once in the prompt encoder.
    pe_key = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    out["shared_image_embedding.positional_embedding"] = (pe_key, sd[pe_key])
    return out


def hf_config(cfg: Dict):
    from transformers import SamConfig

    return SamConfig(
        vision_config=dict(
            hidden_size=cfg["encoder_embed_dim"],
            output_channels=cfg["prompt_embed_dim"],
            num_hidden_layers=cfg["encoder_depth"],
            num_attention_heads=cfg["encoder_num_heads"],
            image_size=cfg["image_size"],
            patch_size=cfg["vit_patch_size"],
            window_size=cfg["window_size"],
            global_attn_indexes=list(cfg["encoder_global_attn_indexes"]),
            mlp_ratio=float(cfg["mlp_ratio"]),
            num_pos_feats=cfg["prompt_embed_dim"] // 2,
            layer_norm_eps=1e-6,
            qkv_bias=True,
            use_abs_pos=True,
            use_rel_pos=True,
        ),
        prompt_encoder_config=dict(
            hidden_size=cfg["prompt_embed_dim"],
            image_size=cfg["image_size"],
            patch_size=cfg["vit_patch_size"],
            mask_input_channels=cfg["mask_in_chans"],
            layer_norm_eps=1e-6,
        ),
        mask_decoder_config=dict(
            hidden_size=cfg["prompt_embed_dim"],
            mlp_dim=cfg["decoder_mlp_dim"],
            num_hidden_layers=cfg["decoder_depth"],
            num_attention_heads=cfg["decoder_num_heads"],
            num_multimask_outputs=cfg["num_multimask_outputs"],
            iou_head_depth=cfg["iou_head_depth"],
            iou_head_hidden_dim=cfg["iou_head_hidden_dim"],
            # The official TwoWayTransformer uses nn.LayerNorm's default eps (1e-5);
            # HF's default for these norms is 1e-6.  Only the forward comparison
            # below depends on this; the weights are the same either way.
            layer_norm_eps=1e-5,
        ),
    )


@torch.no_grad()
def write_hf(sam: Sam, cfg: Dict, out_dir: str, image: torch.Tensor, embed: torch.Tensor, cases: Dict) -> None:
    """Write model_hf.safetensors + hf_keys.txt and verify them against transformers.SamModel."""
    from transformers import SamModel

    sd = state_dict_tensors(sam)
    mapped = official_to_hf(sd, cfg)
    hf_model = SamModel(hf_config(cfg)).eval()
    hf_keys = list(hf_model.state_dict().keys())
    unknown = sorted(set(mapped) - set(hf_keys))
    absent = sorted(set(hf_keys) - set(mapped))
    assert not unknown and not absent, f"HF mapping mismatch: unknown={unknown} absent={absent}"
    hf_sd = OrderedDict((k, mapped[k][1].clone().contiguous()) for k in hf_keys)
    hf_model.load_state_dict(hf_sd, strict=True)
    mapped_officials = [mapped[k][0] for k in hf_keys]
    assert set(mapped_officials) == set(sd), "some official keys are not used by the HF layout"

    save_file(hf_sd, os.path.join(out_dir, "model_hf.safetensors"), metadata={"format": "pt", "wesam.config": config_json(cfg)})

    pe_key = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    with open(os.path.join(out_dir, "hf_keys.txt"), "w") as f:
        f.write("# transformers SamModel key -> official segment_anything key, for the tiny fixture.\n")
        f.write("# Format: hf_key official_key shape   (shape as [d0,d1,...])\n")
        f.write(f"# {len(hf_keys)} HF keys for {len(sd)} official keys. The one HF key with no separate official\n")
        f.write("# counterpart is shared_image_embedding.positional_embedding: HF ties it to\n")
        f.write(f"# prompt_encoder.shared_embedding.positional_embedding; both are copies of {pe_key}.\n")
        f.write("# Official MLP layers.{0..n-1} -> HF proj_in, layers.{0..n-3}, proj_out.\n")
        for k in hf_keys:
            shape = "[" + ",".join(str(s) for s in hf_sd[k].shape) + "]"
            f.write(f"{k} {mapped[k][0]} {shape}\n")

    # Forward checks: vision encoder and full model (prompt encoder + decoder).
    hf_embed = hf_model.vision_encoder(image).last_hidden_state
    print(f"HF vision encoder vs official image embeddings: max abs diff {(hf_embed - embed).abs().max().item():.3e}")
    box = cases["box"]
    out = hf_model(image_embeddings=embed, input_boxes=box[None], multimask_output=False)
    d_masks = (out.pred_masks[0] - cases["box.single.low_res"]).abs().max().item()
    d_iou = (out.iou_scores[0] - cases["box.single.iou"]).abs().max().item()
    print(f"HF SamModel box/single decode vs official: max abs diff low_res {d_masks:.3e}, iou {d_iou:.3e}")
    out = hf_model(
        image_embeddings=embed,
        input_points=cases["points"][None],
        input_labels=cases["point_labels"][None].long(),
        multimask_output=True,
    )
    d_masks = (out.pred_masks[0] - cases["points.multi.low_res"]).abs().max().item()
    print(f"HF SamModel points/multi decode vs official: max abs diff low_res {d_masks:.3e}")


# --------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------


def write_model_and_lora(sam: Sam, cfg: Dict, lora: Dict[str, torch.Tensor], out_dir: str) -> None:
    save_file(state_dict_tensors(sam), os.path.join(out_dir, "model.safetensors"), metadata={"wesam.config": config_json(cfg)})
    # The same weights as an official-style PyTorch checkpoint (zip-pickled plain state dict).
    torch.save(state_dict_tensors(sam), os.path.join(out_dir, "model.pth"))
    lora_meta = json.dumps({"rank": LORA_RANK, "scale": LORA_SCALE, "blocks": list(range(cfg["encoder_depth"]))})
    save_file(
        OrderedDict((k, v.contiguous()) for k, v in lora.items()),
        os.path.join(out_dir, "lora.safetensors"),
        metadata={"wesam.lora": lora_meta},
    )


def core_cases(sam: Sam, cfg: Dict, lora: Dict[str, torch.Tensor], gen: torch.Generator) -> "OrderedDict[str, torch.Tensor]":
    """Cases shared by the tiny and the ViT-B modes: embeddings, box decode, gradients."""
    size = cfg["image_size"]
    f = size / 128.0
    cases = OrderedDict()
    image = torch.randn(1, 3, size, size, generator=gen)
    cases["image"] = image
    with torch.no_grad():
        cases["embed"] = sam.image_encoder(image)
        with lora_enabled(sam, lora):
            cases["embed_lora"] = sam.image_encoder(image)
    cases["box"] = torch.tensor([[16.0, 20.0, 90.0, 100.0], [40.0, 10.0, 120.0, 70.0]]) * f
    with torch.no_grad():
        low, iou = decode(sam, cases["embed"], boxes=cases["box"])
    cases["box.single.low_res"], cases["box.single.iou"] = low, iou
    target = disc_targets(2, low.shape[-1])
    loss, grads = lora_gradients(sam, lora, image, cases["box"], target)
    cases["grad.target"] = target
    cases["grad.loss"] = loss
    for k, g in grads.items():
        cases[f"grad.{k}"] = g
    return cases


def tiny_mode(out_dir: str) -> None:
    torch.set_num_threads(1)  # fixed reduction order -> reproducible bytes
    cfg = TINY_CONFIG
    os.makedirs(out_dir, exist_ok=True)
    sam = make_random_sam(cfg)
    lora = make_lora(cfg)
    write_model_and_lora(sam, cfg, lora, out_dir)

    gen = torch.Generator().manual_seed(CASE_SEED)
    cases = core_cases(sam, cfg, lora, gen)
    embed = cases["embed"]

    # Prompts in the 128x128 input frame, two instances.
    cases["points"] = torch.tensor([[[50.0, 60.0], [20.0, 30.0], [75.0, 80.0]],
                                    [[80.0, 40.0], [100.0, 20.0], [60.0, 55.0]]])
    cases["point_labels"] = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    cases["mask_input"] = 3.0 * torch.randn(2, 1, 32, 32, generator=gen)
    points = (cases["points"], cases["point_labels"])
    prompts = {
        "box": dict(boxes=cases["box"]),
        "points": dict(points=points),
        "box_points": dict(points=points, boxes=cases["box"]),
        "mask_box": dict(boxes=cases["box"], masks=cases["mask_input"]),
    }
    with torch.no_grad():
        for name, kw in prompts.items():
            for mode in ("single", "multi"):
                low, iou = decode(sam, embed, multimask=(mode == "multi"), **kw)
                if name == "box" and mode == "single":
                    assert torch.equal(low, cases["box.single.low_res"])
                cases[f"{name}.{mode}.low_res"], cases[f"{name}.{mode}.iou"] = low, iou

    # Gradients of every parameter (training with --trainable all / decoder).
    loss, labels_a, grads = weight_gradients(sam, cases["image"], cases["box"], points, cases["mask_input"])
    cases["wgrad.loss"], cases["wgrad.labels"] = loss, labels_a
    for k, g in grads.items():
        # Key biases are cancelled by the softmax: their true gradient is zero (rounding noise).
        assert k.endswith("k_proj.bias") or g.abs().max() > 1e-9, f"{k}: the loss does not reach it"
        cases[f"wgrad.{k}"] = g

    # One WeSAM step's total loss and its LoRA gradients; the strong view is a fixed
    # photometric change of the weak one (no random draw, so later cases are unchanged).
    cases["step.strong"] = (cases["image"] * 0.7 + 0.2).contiguous()
    loss, grads = wesam_step_gradients(sam, lora, cases["image"], cases["step.strong"], cases["box"])
    cases["step.loss"] = loss
    for k, g in grads.items():
        cases[f"step.grad.{k}"] = g

    # Another input size: 96x96 with the 128-sized weights.
    cases["image_96"] = torch.randn(1, 3, 96, 96, generator=gen)
    cases["box_96"] = torch.tensor([[10.0, 12.0, 70.0, 80.0], [30.0, 5.0, 90.0, 50.0]])
    with torch.no_grad():
        cases["embed_96"] = encode_at_size(sam, cases["image_96"])
        low, iou = decode(sam, cases["embed_96"], boxes=cases["box_96"], prompt_encoder=resized_prompt_encoder(sam, 96))
    cases["embed_96_box.low_res"], cases["embed_96_box.iou"] = low, iou

    # End-to-end SamPredictor on a non-square image (read back from the PNG).
    png = os.path.join(out_dir, "image.png")
    Image.fromarray(synthetic_image()).save(png, format="PNG")
    pil = Image.open(png).convert("RGB")
    np_image = np.array(pil)
    box = np.array([25.0, 15.0, 110.0, 70.0])
    pts = np.array([[80.0, 35.0], [40.0, 60.0]])
    labels = np.array([1, 0])
    cases["predict.box"] = torch.from_numpy(box).float()
    cases["predict.points"] = torch.from_numpy(pts).float()
    cases["predict.labels"] = torch.from_numpy(labels).float()
    for key, multimask in (("predict", False), ("predict_multi", True)):
        inp, masks, iou, low = run_predictor(sam, np_image, box, pts, labels, multimask)
        if key == "predict":
            cases["predict.input"] = inp
        cases[f"{key}.masks"], cases[f"{key}.low_res"], cases[f"{key}.iou"] = masks, low, iou
    cases["ref_preprocess.input"] = reference_preprocess(pil, cfg["image_size"])

    cases = OrderedDict((k, v.detach().float().contiguous()) for k, v in cases.items())
    save_file(cases, os.path.join(out_dir, "cases.safetensors"),
              metadata={"tolerance_note": TOLERANCE_NOTE, "torch_version": torch.__version__})

    write_hf(sam, cfg, out_dir, cases["image"], embed, cases)
    report(cases, out_dir)


def vit_b_mode(out_dir: str, image_size: int) -> None:
    cfg = OrderedDict(VIT_B_CONFIG)
    cfg["image_size"] = image_size
    os.makedirs(out_dir, exist_ok=True)
    sam = make_random_sam(cfg)
    lora = make_lora(cfg)
    write_model_and_lora(sam, cfg, lora, out_dir)
    cases = core_cases(sam, cfg, lora, torch.Generator().manual_seed(CASE_SEED))
    cases = OrderedDict((k, v.detach().float().contiguous()) for k, v in cases.items())
    save_file(cases, os.path.join(out_dir, "cases.safetensors"),
              metadata={"tolerance_note": TOLERANCE_NOTE, "torch_version": torch.__version__})
    report(cases, out_dir)


def report(cases: Dict[str, torch.Tensor], out_dir: str) -> None:
    print("selected statistics:")
    for k in ("embed", "embed_lora", "box.single.low_res", "points.multi.low_res", "mask_box.single.low_res",
              "embed_96", "predict.masks", "box.single.iou"):
        if k in cases:
            summarize(k, cases[k])
    grads = {k: v for k, v in cases.items() if k.startswith("grad.image_encoder")}
    mins = min(grads.items(), key=lambda kv: kv[1].abs().max().item())
    print(f"grad.loss = {cases['grad.loss'].item():.6f}; {len(grads)} LoRA gradients; "
          f"min over tensors of max|grad| = {mins[1].abs().max().item():.3e} ({mins[0]})")
    print("files:")
    for name in sorted(os.listdir(out_dir)):
        print(f"  {name:24s} {os.path.getsize(os.path.join(out_dir, name)):>10d} bytes")


def load_lora(path: str) -> Tuple["OrderedDict[str, torch.Tensor]", Dict]:
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["wesam.lora"])
    return OrderedDict(load_file(path)), meta


def load_sam(path: str) -> Tuple[Sam, "OrderedDict"]:
    with safe_open(path, "pt") as f:
        cfg = config_from_json(f.metadata()["wesam.config"])
    sam = build_sam(cfg)
    sam.load_state_dict(load_file(path), strict=True)
    return sam, cfg


def write_merged_mode(path: str, fixture_dir: str) -> None:
    sam, cfg = load_sam(os.path.join(fixture_dir, "model.safetensors"))
    lora, meta = load_lora(os.path.join(fixture_dir, "lora.safetensors"))
    save_file(merge_lora(sam, lora, meta["scale"]), path, metadata={"wesam.config": config_json(cfg)})
    print(f"wrote {path}")


@torch.no_grad()
def check_merged_mode(path: str, fixture_dir: str) -> int:
    merged, cfg = load_sam(path)
    base, base_cfg = load_sam(os.path.join(fixture_dir, "model.safetensors"))
    if dict(cfg) != dict(base_cfg):
        print(f"config mismatch:\n  merged  {config_json(cfg)}\n  fixture {config_json(base_cfg)}")
        return 2
    lora, meta = load_lora(os.path.join(fixture_dir, "lora.safetensors"))
    cases = load_file(os.path.join(fixture_dir, "cases.safetensors"))
    image, box = cases["image"], cases["box"]

    with lora_enabled(base, lora, meta["scale"]):
        ref_embed = base.image_encoder(image)
    ref_low, _ = decode(base, ref_embed, boxes=box)
    embed = merged.image_encoder(image)
    low, _ = decode(merged, embed, boxes=box)

    d_embed = (embed - ref_embed).abs().max().item()
    d_low = (low - ref_low).abs().max().item()
    d_fixture = (ref_embed - cases["embed_lora"]).abs().max().item()
    print(f"reference (base + LoRA wrapper) vs fixture embed_lora: max abs diff {d_fixture:.3e}")
    print(f"merged vs base+LoRA: embeddings max abs diff {d_embed:.3e}, low-res logits max abs diff {d_low:.3e}")
    ok = d_embed <= TOLERANCE and d_low <= TOLERANCE
    print("OK" if ok else f"FAIL (tolerance {TOLERANCE:g})")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_OUT}; required with --vit-b)")
    ap.add_argument("--vit-b", action="store_true", help="ViT-B configuration with random weights")
    ap.add_argument("--image-size", type=int, default=1024, help="encoder input size for --vit-b (default 1024)")
    ap.add_argument("--check-merged", metavar="FILE", help="verify a wesam-merged model against base + fixture LoRA")
    ap.add_argument("--write-merged", metavar="FILE", help="write the reference merged model (base + fixture LoRA)")
    ap.add_argument("--fixture-dir", default=DEFAULT_OUT, help="fixture used by --check-merged / --write-merged")
    args = ap.parse_args()

    if args.check_merged:
        return check_merged_mode(args.check_merged, args.fixture_dir)
    if args.write_merged:
        write_merged_mode(args.write_merged, args.fixture_dir)
        return 0
    if args.vit_b:
        if not args.out:
            ap.error("--vit-b needs --out DIR")
        if args.image_size % 16:
            ap.error("--image-size must be a multiple of 16")
        vit_b_mode(args.out, args.image_size)
        return 0
    tiny_mode(args.out or DEFAULT_OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
