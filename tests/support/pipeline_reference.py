"""Run transformers' pipeline("mask-generation") and save its masks (reference for test_everything).

It needs torchvision, which does not install beside this project's torch, so the test runs it in
a second interpreter: SAM_PIPELINE_PYTHON (CI makes one: torch 2.14.1 + torchvision 0.29.1).

    python pipeline_reference.py MODEL_DIR IMAGE OUT.npz '{"points_per_crop": 8, ...}'
"""

import json
import sys

import numpy as np
import torch
from PIL import Image
from transformers import SamModel, pipeline
from transformers.models.sam import SamImageProcessorPil

torch.set_flush_denormal(True)
model_dir, image_path, out_path, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
generator = pipeline(
    "mask-generation",
    model=SamModel.from_pretrained(model_dir),
    image_processor=SamImageProcessorPil.from_pretrained(model_dir),  # the processor our engine uses
    device="cpu",
)
out = generator(Image.open(image_path).convert("RGB"), **options)
masks = np.stack([np.asarray(m, dtype=bool) for m in out["masks"]]) if out["masks"] else np.zeros((0, 1, 1), bool)
np.savez_compressed(out_path, masks=masks, scores=np.asarray(out["scores"], dtype=np.float32))
print(len(masks))
