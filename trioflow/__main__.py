"""``python -m trioflow``: the ``trioflow`` command."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    main()
