"""Write SAM checkpoints with random weights, for tests, benchmarks and offline runs.

No machine in our workplace reaches the model hub, so the test-suite, the benchmark and anyone
who wants to click through the app offline build a SAM from `SamConfig`, re-initialise it and
save it with `save_pretrained`. The folder then loads through `load_predictor` exactly like
`facebook/sam-vit-large`.

Default random init collapses the vision encoder's output to ~1e-20, which makes masks
nearly independent of the image and the prompt. We re-initialise every weight from
N(0, std) instead; `check_prompt_dependence` verifies that the result reacts to prompts.

Command line::

    python -m sam_demo.checkpoints checkpoints/sam-tiny-random            # tiny encoder
    python -m sam_demo.checkpoints --arch large checkpoints/sam-vit-large-random
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import SamConfig, SamModel, SamProcessor
from transformers.models.sam import SamImageProcessorPil
from transformers.models.sam.configuration_sam import SamVisionConfig

from sam_demo.engine.config import RANDOM_WEIGHTS_ATTR  # marker written into config.json; the app warns on screen


@dataclass(frozen=True)
class VisionArch:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    global_attn_indexes: tuple[int, ...]
    mlp_dim: int


# The prompt encoder and mask decoder are the same for every SAM size; only the ViT differs.
ARCHS: dict[str, VisionArch] = {
    "tiny": VisionArch(64, 2, 2, (1,), 128),
    "base": VisionArch(768, 12, 12, (2, 5, 8, 11), 3072),
    "large": VisionArch(1024, 24, 16, (5, 11, 17, 23), 4096),
    "huge": VisionArch(1280, 32, 16, (7, 15, 23, 31), 5120),
}


def build_random_sam(arch: str = "tiny", seed: int = 0, std: float = 0.1) -> SamModel:
    """Build a SAM with the given ViT size and N(0, std) weights (fp32, eval mode)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    a = ARCHS[arch]
    vision = SamVisionConfig(
        hidden_size=a.hidden_size,
        num_hidden_layers=a.num_hidden_layers,
        num_attention_heads=a.num_attention_heads,
        global_attn_indexes=list(a.global_attn_indexes),
        mlp_dim=a.mlp_dim,
    )
    config = SamConfig(vision_config=vision.to_dict())
    setattr(config, RANDOM_WEIGHTS_ATTR, True)
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "positional_embedding" in name:
                continue  # keep the Fourier features' default N(0, 1) frequencies
            param.normal_(0.0, std)
        # Unit layer norms keep activations O(1); random ones make masks ignore the prompt.
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
    return model


def check_prompt_dependence(model: SamModel) -> float:
    """Return the fraction of low-res mask pixels (3 candidates) that differ between two distant clicks.

    Raises RuntimeError when the masks do not react to the prompt: every equivalence test on
    such a model would pass vacuously.
    """
    with torch.no_grad():
        pixel_values = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
        embeddings = model.get_image_embeddings(pixel_values)
        masks = []
        for xy in ((100.0, 150.0), (900.0, 700.0)):
            out = model(
                image_embeddings=embeddings,
                input_points=torch.tensor([[[xy]]]),
                input_labels=torch.tensor([[[1]]]),
                multimask_output=True,
            )
            masks.append(out.pred_masks[0, 0] > 0)
    changed = (masks[0] != masks[1]).float().mean().item()
    if changed < 0.05:
        raise RuntimeError(f"random SAM ignores prompts: only {changed:.2%} of mask pixels changed")
    return changed


def write_random_checkpoint(folder: str | Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Save a prompt-dependent random SAM and its processor to `folder`; return the folder."""
    folder = Path(folder)
    torch.set_flush_denormal(True)
    model = build_random_sam(arch, seed)
    check_prompt_dependence(model)
    model.save_pretrained(folder)
    # The same image-processor settings as facebook/sam-vit-*: longest side 1024, pad to 1024.
    SamProcessor(SamImageProcessorPil()).save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sam_demo.checkpoints", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="output folder (created)")
    parser.add_argument("--arch", default="tiny", choices=sorted(ARCHS), help="ViT size (default: tiny)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = write_random_checkpoint(args.folder, args.arch, args.seed)
    print(f"wrote a random-weight SAM ({args.arch}) to {folder}; run: python app.py --model {folder}")


if __name__ == "__main__":
    main()
