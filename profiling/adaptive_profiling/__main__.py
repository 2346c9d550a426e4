"""`python -m adaptive_profiling`: see `adaptive_profiling.cli`."""

import sys

from adaptive_profiling.cli import main

sys.exit(main())
