"""python -m reference: the same as clusterproof-server."""

from __future__ import annotations

import sys

from reference.main import main

sys.exit(main())
