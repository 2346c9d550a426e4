"""`python -m adaptive_client.reliability`: see adaptive_client.reliability.cli."""

import sys

from adaptive_client.reliability.cli import main

sys.exit(main())
