"""Match3 with softmax, exact tensor and certified polynomial tensor attention (``verified-ta demo match3``).

    python examples/match3.py [--steps 400 --seeds 0,1,2 ...]

Writes examples/match3.json (curves, gradient audits) and examples/match3.png; options as ``verified-ta demo match3
--help``. The model, task and audit are in ``verified_ta.match3``.
"""

import sys

from verified_ta.cli import app

if __name__ == "__main__":
    app(["demo", "match3", "--out", "examples/match3", *sys.argv[1:]], prog_name="examples/match3.py")
