"""`python -m adaptive_client.bench`."""

import sys

from adaptive_client.bench.cli import main

sys.exit(main())
