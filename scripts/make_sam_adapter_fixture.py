#!/usr/bin/env python3
"""Parity fixture for wesam's SAM-Adapter (explicit visual prompting) adapter.

Builds, in PyTorch and from the specification (``../shared/reference/sam-adapter-ebseg-amg.md``
section 1, read from the authors' code), a small SAM whose encoder has SAM-Adapter's prompt
generator, with every weight random and seeded, and records:

``tests/fixtures/sam_adapter/model.safetensors``
    The weights under the released SAM-Adapter keys: ``image_encoder.*`` (with
    ``image_encoder.prompt_generator.*``), ``mask_decoder.*``, ``no_mask_embed.weight`` and
    ``pe_layer.positional_encoding_gaussian_matrix``, and no prompt encoder; metadata
    ``wesam.config`` (the architecture).
``tests/fixtures/sam_adapter/cases.safetensors``
    ``image`` (a normalised input batch of 2), ``hfc`` (the high-frequency component of
    ``image``), and for each F_pe layout L in ``faithful``, ``per_token``: ``L.low_res``
    (prompt-free low-resolution logits, one mask per image), ``L.iou``, ``L.loss`` (the BCE +
    IoU loss of SAM-Adapter on the logits upsampled to the input size against ``target``) and
    ``L.grad.<key>`` (its gradient with respect to every adapter, mask-decoder and
    ``no_mask_embed`` tensor, under its checkpoint key).

The encoder blocks, neck, mask decoder and positional encoding are the official
``segment_anything`` modules; only the prompt generator and its call are written here, from the
specification. Run with the torch virtual environment: ``python3 scripts/make_sam_adapter_fixture.py``.
"""

from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixture import REPO_ROOT, build_sam, config_json, randomize_, save_file  # noqa: E402

OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "sam_adapter")

CONFIG = OrderedDict(
    encoder_embed_dim=64,
    encoder_depth=3,
    encoder_num_heads=2,
    encoder_global_attn_indexes=[1],
    prompt_embed_dim=32,
    image_size=64,
    vit_patch_size=8,
    window_size=3,
    mlp_ratio=4.0,
    mask_in_chans=8,
    decoder_depth=2,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_depth=3,
    iou_head_hidden_dim=32,
    num_multimask_outputs=3,
)
SCALE_FACTOR = 32  # c = D / 32
FFT_RATE = 0.25
SEED = 20241207


def high_frequency(x: torch.Tensor, rate: float = FFT_RATE) -> torch.Tensor:
    """F_hfc: |Re(IFFT(FFT(x) with the centred low-frequency square removed))|, per channel."""
    mask = torch.zeros_like(x)
    h, w = x.shape[-2:]
    line = int(math.sqrt(h * w * rate) // 2)
    mask[:, :, h // 2 - line : h // 2 + line, w // 2 - line : w // 2 + line] = 1
    spectrum = torch.fft.fftshift(torch.fft.fft2(x, norm="forward"), dim=(-2, -1))
    spectrum = spectrum * (1 - mask)
    back = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)), norm="forward").real
    return back.abs()


class PatchConv(nn.Module):
    """`PatchEmbed2`: the high-frequency image to c channels per patch."""

    def __init__(self, patch: int, c: int):
        super().__init__()
        self.proj = nn.Conv2d(3, c, kernel_size=patch, stride=patch)


class PromptGenerator(nn.Module):
    """The adapter's weights under the released key names."""

    def __init__(self, dim: int, depth: int, patch: int):
        super().__init__()
        c = dim // SCALE_FACTOR
        self.depth = depth
        self.embedding_generator = nn.Linear(dim, c)
        self.prompt_generator = PatchConv(patch, c)
        for i in range(depth):
            setattr(self, f"lightweight_mlp_{i}", nn.Sequential(nn.Linear(c, c), nn.GELU()))
        self.shared_mlp = nn.Linear(c, dim)

    def prompts(self, x: torch.Tensor, image: torch.Tensor, layout: str):
        """One prompt [B, H, W, D] per block, from the patch embedding x [B, H, W, D]."""
        b, h, w, d = x.shape
        if layout == "faithful":
            # The released code's reshape of the unpermuted tensor: token t, channel j is the
            # element at flat index j * H * W + t of the (h, w, d)-ordered embedding.
            fpe = x.reshape(b, d, h * w).permute(0, 2, 1)
        else:
            fpe = x.reshape(b, h * w, d)
        fpe = self.embedding_generator(fpe)
        hfc = self.prompt_generator.proj(high_frequency(image))
        hfc = hfc.flatten(2).permute(0, 2, 1)
        f = hfc + fpe
        return [
            self.shared_mlp(getattr(self, f"lightweight_mlp_{i}")(f)).reshape(b, h, w, d)
            for i in range(self.depth)
        ]


def init_adapter_(adapter: PromptGenerator, gen: torch.Generator) -> None:
    """Random weights large enough to move the model (the released init's std 0.02 would hide
    a wrong layout behind tiny prompts)."""
    with torch.no_grad():
        for module in adapter.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(fan_in))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))


def encode(sam, adapter: PromptGenerator, image: torch.Tensor, layout: str) -> torch.Tensor:
    enc = sam.image_encoder
    x = enc.patch_embed(image)
    prompts = adapter.prompts(x, image, layout)
    x = x + enc.pos_embed
    for block, prompt in zip(enc.blocks, prompts):
        x = block(x + prompt)
    return enc.neck(x.permute(0, 3, 1, 2))


def decode_prompt_free(sam, no_mask_embed: torch.Tensor, embeddings: torch.Tensor):
    """The decoder with no sparse prompt and the learned dense embedding, one mask per image."""
    b, c, h, w = embeddings.shape
    sparse = torch.zeros(b, 0, c)
    dense = no_mask_embed.reshape(1, c, 1, 1).expand(b, c, h, w)
    pe = sam.prompt_encoder.pe_layer((h, w)).unsqueeze(0)
    low, iou = [], []
    for i in range(b):
        m, s = sam.mask_decoder(
            image_embeddings=embeddings[i : i + 1],
            image_pe=pe,
            sparse_prompt_embeddings=sparse[i : i + 1],
            dense_prompt_embeddings=dense[i : i + 1],
            multimask_output=False,
        )
        low.append(m)
        iou.append(s)
    return torch.cat(low), torch.cat(iou)


def bce_iou_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM-Adapter's `iou` loss: BCE with logits (mean) + mean(1 - soft IoU), no epsilon."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3))
    union = (p + target).sum(dim=(2, 3)) - inter
    return bce + (1 - inter / union).mean()


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(SEED)
    sam = build_sam(CONFIG)
    randomize_(sam, SEED)
    adapter = PromptGenerator(CONFIG["encoder_embed_dim"], CONFIG["encoder_depth"], CONFIG["vit_patch_size"])
    init_adapter_(adapter, gen)
    no_mask_embed = sam.prompt_encoder.no_mask_embed.weight.detach().clone()

    size = CONFIG["image_size"]
    image = torch.randn(2, 3, size, size, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    target = torch.stack(
        [((xx - 24) ** 2 + (yy - 30) ** 2 < 15**2).float(), ((xx - 40) ** 2 + (yy - 20) ** 2 < 10**2).float()]
    ).unsqueeze(1)

    weights = OrderedDict()
    for k, v in sam.image_encoder.state_dict().items():
        weights[f"image_encoder.{k}"] = v.detach().clone()
    for k, v in adapter.state_dict().items():
        weights[f"image_encoder.prompt_generator.{k}"] = v.detach().clone()
    for k, v in sam.mask_decoder.state_dict().items():
        weights[f"mask_decoder.{k}"] = v.detach().clone()
    weights["no_mask_embed.weight"] = no_mask_embed.clone()
    weights["pe_layer.positional_encoding_gaussian_matrix"] = (
        sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.detach().clone()
    )

    cases = OrderedDict(image=image, target=target, hfc=high_frequency(image))
    for layout in ("faithful", "per_token"):
        trained = OrderedDict()
        for k, p in adapter.named_parameters():
            trained[f"image_encoder.prompt_generator.{k}"] = p
        for k, p in sam.mask_decoder.named_parameters():
            trained[f"mask_decoder.{k}"] = p
        embed = nn.Parameter(no_mask_embed.clone())
        trained["no_mask_embed.weight"] = embed
        low, iou = decode_prompt_free(sam, embed, encode(sam, adapter, image, layout))
        logits = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)
        loss = bce_iou_loss(logits, target)
        grads = torch.autograd.grad(loss, list(trained.values()), allow_unused=True)
        cases[f"{layout}.low_res"] = low.detach()
        cases[f"{layout}.iou"] = iou.detach()
        cases[f"{layout}.loss"] = loss.detach().reshape(1)
        for (k, p), g in zip(trained.items(), grads):
            cases[f"{layout}.grad.{k}"] = torch.zeros_like(p) if g is None else g.detach()
        print(f"{layout}: loss {loss.item():.6f}, low-res std {low.std().item():.3f}")

    os.makedirs(OUT, exist_ok=True)
    save_file(weights, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt", "wesam.config": config_json(CONFIG)})
    save_file(cases, os.path.join(OUT, "cases.safetensors"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
