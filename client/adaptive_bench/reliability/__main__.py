"""`python -m adaptive_bench.reliability`: see adaptive_bench.reliability.cli."""

import sys

from adaptive_bench.reliability.cli import main

sys.exit(main())
