"""Run a bench script of another checkout against that checkout's package: before/after measurements.

usage: git worktree add ../before eb3099a
       python bench/run_at.py ../before bench/decode.py --threads 1

The editable install of this checkout puts its `transformer` on the import path through a finder in
`sys.meta_path`; that finder is removed and the other checkout goes first on `sys.path`, so the script and
everything it imports come from there, with this environment's torch and other packages.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: python bench/run_at.py CHECKOUT_DIR SCRIPT [ARGS...]  (SCRIPT relative to CHECKOUT_DIR)")
    checkout, script = Path(sys.argv[1]).resolve(), sys.argv[2]
    path = checkout / script
    if not (checkout / "transformer" / "__init__.py").is_file() or not path.is_file():
        sys.exit(f"{checkout} has no transformer/ package or no {script}: "
                 "give a checkout (git worktree add DIR COMMIT)")
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    for name in [m for m in sys.modules if m == "transformer" or m.startswith("transformer.")]:
        del sys.modules[name]
    sys.path[:0] = [str(checkout), str(path.parent)]
    sys.argv = [str(path), *sys.argv[3:]]
    runpy.run_path(str(path), run_name="__main__")


if __name__ == "__main__":
    main()
