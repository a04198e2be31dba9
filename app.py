"""sam-demo entry point (Hugging Face Spaces runs `python app.py`). See README.md."""

from sam_demo.server import main

if __name__ == "__main__":
    main()
