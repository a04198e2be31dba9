"""`python -m sam_demo.precompute IMAGES_DIR_OR_CSV --embedding-store DIR`: encode images into the store.

The command's home; the code is `sam_demo.batch.precompute` (and its flags in `sam_demo.batch.cli`).
"""

from sam_demo.batch.cli import precompute_main

if __name__ == "__main__":
    precompute_main()
