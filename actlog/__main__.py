"""``python -m actlog``: the same as the ``actlog`` command."""

import sys

from actlog.cli import main

sys.exit(main())
