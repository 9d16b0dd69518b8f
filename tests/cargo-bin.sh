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

# A free loopback TCP port.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (10 s at most) until something listens on loopback port $1; fails
# loudly naming $2 (what was started) if nothing does.
wait_port() {
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "FAIL: $2 is not listening on 127.0.0.1:$1 after 10 s"
  exit 1
}
