"""The engine's helpers, each a module of pure functions or small classes: coordinate frames
(`geometry.py`), mask resizing (`transforms.py`), the byte-bounded cache (`cache.py`), image
decoding (`images.py`), prompt rules (`prompts.py`), automatic-mask helpers (`amg.py`), COCO
encoding (`coco.py`) and the C heap (`heap.py`). May import: the numeric stack and each other;
nothing else of sam_demo. geometry, prompts, images and cache import no torch.
"""
