"""``python -m pipeline`` (and ``torchrun -m pipeline``) runs the ``vtl`` CLI."""

from pipeline.cli import main

if __name__ == "__main__":
    main()
