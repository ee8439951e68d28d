"""Entry point for ``python -m spine_monai``."""

from __future__ import annotations

from spine_monai.cli import main

if __name__ == "__main__":
    main()
