"""``python -m rlm ...`` is ``rlm ...``."""

from rlm.cli import main

if __name__ == "__main__":
    main()
