#!/usr/bin/env bash
# Builds Mizzen's container images from images/Dockerfile, one target per component, named as
# `mizzenctl install` renders them: <hub>/mizzen-{operator,webhook,agent,proxy}:<tag>, and the
# demo app's image <hub>/mizzen-demo:<tag> that the kind e2e suite deploys.
#
#   scripts/build-images.sh [--hub HUB] [--tag TAG] [--list] [COMPONENT...]
#
# The defaults are read from the sources that `mizzenctl install` uses (DEFAULT_HUB in
# operator/ctl/src/install/mod.rs, the workspace version in Cargo.toml), so the images and the
# manifests agree without a second copy of either. --list prints the image references and builds
# nothing (e2e/kind.sh can load exactly these). Uses docker (BuildKit), else podman; when
# neither has a running engine it says so and exits 0, so CI stays green where images cannot be
# built. ENGINE=docker|podman forces one.
set -euo pipefail
cd "$(dirname "$0")/.."

all=(operator webhook agent proxy demo)
hub="$(sed -n 's/^pub const DEFAULT_HUB: &str = "\(.*\)";$/\1/p' operator/ctl/src/install/mod.rs)"
tag="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)"
list=0
components=()
while [ $# -gt 0 ]; do
  case "$1" in
    --hub) hub="${2:?--hub needs a value}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "build-images.sh: unknown option $1" >&2; exit 2 ;;
    *)
      [[ " ${all[*]} " == *" $1 "* ]] || { echo "build-images.sh: unknown component $1 (one of: ${all[*]})" >&2; exit 2; }
      components+=("$1"); shift ;;
  esac
done
[ ${#components[@]} -gt 0 ] || components=("${all[@]}")
if [ -z "$hub" ] || [ -z "$tag" ]; then
  echo "build-images.sh: could not read the default hub or tag from the sources; pass --hub and --tag" >&2
  exit 1
fi
hub="${hub%/}"

image() { printf '%s/mizzen-%s:%s' "$hub" "$1" "$tag"; }

if [ "$list" -eq 1 ]; then
  for c in "${components[@]}"; do image "$c"; echo; done
  exit 0
fi

# An engine is usable when its client answers `info`: a docker CLI without a daemon is not one.
engine="${ENGINE:-}"
if [ -z "$engine" ]; then
  for candidate in docker podman; do
    if command -v "$candidate" >/dev/null 2>&1 && timeout 20 "$candidate" info >/dev/null 2>&1; then
      engine="$candidate"
      break
    fi
  done
fi
if [ -z "$engine" ]; then
  echo "SKIPPED: no container engine is running here (neither \`docker info\` nor \`podman info\` answers), so the images were not built: ${components[*]}"
  exit 0
fi

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# images/Dockerfile uses RUN --mount caches, which need BuildKit (podman/buildah support them).
export DOCKER_BUILDKIT=1
for c in "${components[@]}"; do
  ref="$(image "$c")"
  echo "==> $engine build --target $c -t $ref"
  "$engine" build \
    --file images/Dockerfile \
    --target "$c" \
    --build-arg "VERSION=$tag" \
    --build-arg "REVISION=$revision" \
    --tag "$ref" \
    .
done
echo "built: $(for c in "${components[@]}"; do printf '%s ' "$(image "$c")"; done)"
