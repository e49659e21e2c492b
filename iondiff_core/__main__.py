import sys

from iondiff_core.cli import main

sys.exit(main())
