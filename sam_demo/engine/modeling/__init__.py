"""SAM's modules in the forms this engine runs: the prompt decoder with its per-image work cached
(`decoder.py`), the same decoder rearranged for speed (`fast_decoder.py`), and the ViT's
relative-position attention in two faster forms (`vision_attention.py`). Each is tested equal to
transformers' module. May import: torch, transformers, `engine.utils`.
"""
