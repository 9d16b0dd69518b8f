# Sourced by the test scripts: sets $bin to the chatlake binary that
# `cargo test` builds, in the target dir cargo itself reports (so
# CARGO_TARGET_DIR, .cargo/config.toml and ./target all work, and nothing is
# built a second time). The build, if one is needed, shows its output.
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target_dir" ] || { echo "FAIL: cargo metadata did not name a target directory"; exit 1; }
# The binary as `cargo test` builds it (same features as the test build).
cargo test --no-run
bin="$target_dir/debug/chatlake"
[ -x "$bin" ] || { echo "FAIL: no chatlake binary at $bin after cargo test --no-run"; exit 1; }
