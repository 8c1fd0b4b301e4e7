"""Builds a busybox-static image offline, as a `docker save` archive (the builder is orchestr.testing.images).

    python scripts/mkimage.py OUT.tar [--ref busybox:latest] [--extra-mb N]
"""

from orchestr.testing.images import main

if __name__ == "__main__":
    main()
