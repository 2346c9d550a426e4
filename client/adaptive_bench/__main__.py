"""`python -m adaptive_bench`."""

import sys

from adaptive_bench.cli import main

sys.exit(main())
