"""SAM's image encoder (the ViT) compiled by OpenVINO, for CPUs where torch's fp32 ViT is slow.

Measured on a 2-core AMD EPYC (Zen 5), ViT-B and ViT-L with random weights at 1024x1024, against
torch's fp32 `get_image_embeddings` in the same process: 2.0x (B) and 1.9x (L) with the CPU capped
to AVX2 (as on CPUs without native bf16, where this runs by default), about 3x with its AVX-512;
embeddings equal to fp32 torch's to ~1e-6 (cosine 1.000000), masks the same. int8 weights and
activations (NNCF) were no faster on AVX2, so they are not used.

The ViT is exported with `torch.export`, converted once per checkpoint and OpenVINO version, and
kept on disk as OpenVINO's IR (the fp32 weights: 0.35 GB for ViT-B, 1.2 GB for ViT-L) under a key
of both plus the weights' content, so later starts only read and compile it (seconds). A file
that cannot be read is converted again. Converting takes ~5 s (B) / ~11 s (L) on 2 cores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["OpenVinoEncoder", "default_cache_dir", "openvino_available"]

log = logging.getLogger("sam_demo")
INPUT_SHAPE = (1, 3, 1024, 1024)


def openvino_available() -> bool:
    """Whether the `openvino` package can be imported here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def default_cache_dir() -> Path:
    """Where converted encoders are kept: $SAM_DEMO_CACHE, else $XDG_CACHE_HOME or ~/.cache, + sam-demo/openvino."""
    base = (
        os.environ.get("SAM_DEMO_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sam-demo"
    )
    return Path(base) / "openvino"


class _Embeddings(torch.nn.Module):
    """What `SamModel.get_image_embeddings` computes: the vision encoder's first output."""

    def __init__(self, vision_encoder: torch.nn.Module):
        super().__init__()
        self.vision_encoder = vision_encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixel_values)[0]


class OpenVinoEncoder:
    """The ViT as an OpenVINO compiled model: pixel values (1, 3, 1024, 1024) float32 -> image
    embeddings (1, 256, 64, 64) float32, as torch tensors. One encode at a time (the engine's lock).

    precision: "f32" (the default: equal to torch's fp32 to float rounding) or "bf16" (where the CPU
    computes it natively). threads: the CPU threads it runs on. vit_digest: the ViT's weights and
    config (`loading.vit_digest`), which with the libraries' versions names the converted copy.
    """

    def __init__(
        self,
        vision_encoder: torch.nn.Module,
        cache_dir: Path,
        vit_digest: str,
        precision: str = "f32",
        threads: int = 1,
    ):
        import openvino as ov

        self.cache_dir = Path(cache_dir)
        key = self.key(vit_digest)
        path = self.cache_dir / key / "vit.xml"
        core = ov.Core()
        model = self._read(core, path)
        if model is None:
            model = self._convert(vision_encoder, path)
        config = {
            "INFERENCE_PRECISION_HINT": precision,  # unset, OpenVINO picks bf16 where the CPU has it
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": max(1, threads),
        }
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self.path = path

    @staticmethod
    def key(vit_digest: str) -> str:
        """What the converted model depends on: OpenVINO's and torch's versions, and the ViT's
        weights and config (their digest)."""
        import openvino as ov

        return hashlib.blake2b(
            f"{ov.__version__}|{torch.__version__}|{vit_digest}".encode(), digest_size=16
        ).hexdigest()

    def _read(self, core, path: Path):
        """The converted model on disk, or None (absent, or unreadable: then it is removed)."""
        if not path.exists():
            return None
        try:
            return core.read_model(path)
        except Exception as exc:  # OpenVINO raises RuntimeError and others for a damaged file
            log.warning("sam_demo: the converted encoder at %s could not be read (%s); converting again", path, exc)
            shutil.rmtree(path.parent, ignore_errors=True)
            return None

    @staticmethod
    def _convert(vision_encoder: torch.nn.Module, path: Path):
        """Export and convert the ViT, and save it under `path` (written to a temporary folder beside
        it and renamed into place, so a crash never leaves a half-written model under the key)."""
        import openvino as ov

        log.info("sam_demo: converting the image encoder for OpenVINO (once per checkpoint) ...")
        example = torch.zeros(INPUT_SHAPE, dtype=torch.float32)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations, not ours to act on
            exported = torch.export.export(_Embeddings(vision_encoder).float().eval(), (example,))
            model = ov.convert_model(exported, input=[INPUT_SHAPE])
        try:
            path.parent.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=path.parent.parent))
            ov.save_model(model, staging / path.name, compress_to_fp16=False)
            try:
                staging.rename(path.parent)
            except OSError:  # another process saved it meanwhile: theirs stands
                shutil.rmtree(staging, ignore_errors=True)
        except OSError as exc:  # a read-only or full disk: run from memory, convert again next time
            log.warning("sam_demo: the converted encoder could not be saved under %s (%s)", path.parent, exc)
        return model

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(pixel_values.detach().to(torch.float32).cpu().numpy())
        self._request.infer({0: pixels})
        return torch.from_numpy(self._request.get_output_tensor(0).data.copy())
