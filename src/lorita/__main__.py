"""``python -m lorita``: the same as the ``lorita`` command."""

from lorita.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
