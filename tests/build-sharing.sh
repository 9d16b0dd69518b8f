#!/usr/bin/env bash
# One build for `cargo run` and `cargo test` (see the end of Cargo.toml):
# fails when a crate is built with other features in the test build than
# in the normal one, which would compile it and everything above it twice.
set -euo pipefail
cd "$(dirname "$0")/.."
tree() { cargo tree -e "$1" -f '{p} {f}' --prefix none | grep -v '(\*)$' | sort -u; }
python3 - <(tree normal,build) <(tree normal,build,dev) <<'PY'
import sys
def crates(path):
    out = {}
    for line in open(path):
        parts = line.split()
        if len(parts) < 2:
            continue
        name = " ".join(parts[:2]) + (" (proc-macro)" if "(proc-macro)" in line else "")
        features = parts[-1] if len(parts) > 2 and parts[-1] != "(proc-macro)" else ""
        out.setdefault(name, set()).add(features)
    return out
normal, test = crates(sys.argv[1]), crates(sys.argv[2])
differ = [f"{k}: {sorted(normal[k])} in the normal build, {sorted(test[k])} in the test build"
          for k in sorted(normal) if k in test and normal[k] != test[k]]
if differ:
    sys.exit("FAIL: built twice (pin the test build's features in Cargo.toml):\n  " + "\n  ".join(differ))
print(f"build sharing: {len(normal)} crates built once for cargo run and cargo test")
PY
