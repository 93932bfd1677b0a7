# Sourced by test.sh and export.sh: which container engine runs the image. One rule, the same as
# leaderboard/engine.py: CONTAINER_ENGINE when set, else docker when its daemon answers, else podman.
#
#   source scripts/container_engine.sh
#   ENGINE="$(container_engine)" || exit 1   # prints the engine; fails, saying why, if not installed

container_engine() {
  local engine
  if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    engine="$CONTAINER_ENGINE"
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
  else
    engine=podman
  fi
  if ! command -v "$engine" >/dev/null; then
    echo "container engine '$engine' not found (set CONTAINER_ENGINE; docker is used when its daemon answers," \
      "podman otherwise)" >&2
    return 1
  fi
  echo "$engine"
}
