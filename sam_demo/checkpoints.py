"""`python -m sam_demo.checkpoints FOLDER [--arch tiny|base|large|huge]`: write a random-weight SAM.

The command's home; the code is `sam_demo.engine.random_sam`.
"""

from sam_demo.engine.random_sam import main

if __name__ == "__main__":
    main()
