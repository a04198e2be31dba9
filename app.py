"""sam-demo entry point (Hugging Face Spaces runs `python app.py`). See README.md."""

from sam_demo.app import main

if __name__ == "__main__":
    main()
