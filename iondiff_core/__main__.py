import sys

from iondiff_core.cli import main

if __name__ == "__main__":  # worker processes re-import this module (spawn)
    sys.exit(main())
