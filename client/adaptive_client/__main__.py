"""`python -m adaptive_client`: see adaptive_client.cli."""

import sys

from adaptive_client.cli import main

sys.exit(main())
