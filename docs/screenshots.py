"""Refresh the README's screenshots in ``docs/images/`` from the examples' own logs.

The browser tests photograph what they check into a temporary directory; this
script runs the ones that open ``examples/mnist_convnet.py``'s log (trained
offline on 1000 of scikit-learn's digits, its default 5 epochs) with ``ACTLOG_SCREENSHOT_DIR``
pointing here, at 1600 x 1200:

- ``tensorboard_time_series.png``, ``tensorboard_images.png``: TensorBoard's own tabs;
- ``dashboard_overview.png``, ``dashboard.png``: the Activations tab's overview and one layer;
- ``dashboard_channel.png``: one channel of ``conv_1`` (the one whose mean activation grew
  the most) at the last epoch: filmstrip, statistics, and its top 8 in the example's
  atlas pool (its 250 test digits) with the change since the atlas before training;
- ``compare.png``: compare mode, the example trained twice from one seed, in batches of 64
  and of 16, ``conv_1`` side by side at the last epoch (``tests/test_compare.py``);
- ``similarity_overview.png``, ``similarity.png``: representation similarity on the test's
  model of a frozen, a trained and a mid-run re-initialised layer: each layer's CKA to its
  last epoch in the overview, and the re-initialised layer's step x step heat map
  (``tests/test_similarity.py``);
- ``dashboard_vit.png``, ``dashboard_vit_tokens.png``, ``dashboard_vit_attention.png``: the
  overview of ``examples/vit_patches.py``'s log, and a block's token maps and the last
  block's attention at the first and the last epoch (``tests/test_tokens.py``).

```
python docs/screenshots.py                     # needs /usr/bin/chromium and /usr/bin/chromedriver
python docs/screenshots.py --out /tmp/shots    # somewhere else
```

Nothing else writes into ``docs/images/``: the tests' own log (with a layer
named like an HTML tag) is only ever photographed into a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    args = parser.parse_args(argv)
    command = [
        sys.executable, "-m", "pytest", "-q", "-m", "browser",
        "-k", "mnist_example or vit_example or heat_map",
        str(ROOT / "tests" / "test_dashboard_browser.py"), str(ROOT / "tests" / "test_tokens.py"),
        str(ROOT / "tests" / "test_compare.py"), str(ROOT / "tests" / "test_similarity.py"),
    ]  # fmt: skip
    env = {**os.environ, "ACTLOG_SCREENSHOT_DIR": str(args.out.resolve())}
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
