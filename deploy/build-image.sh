#!/bin/sh
# Build pushstr's container image with podman (else docker): build-image.sh [IMAGE] [BASE_IMAGE]
#
# When BASE_IMAGE is neither present nor pullable (no registry access), a Debian bookworm base is made here with
# debootstrap (deploy/debian-base.sh, once; root needed) and the image is built on that instead.
# IMAGE_BUILD_FLAGS adds flags to the build command. A host where crun refuses the cgroup layout ("cgroups in hybrid
# mode not supported") and the engine may not raise resource limits (no CAP_SYS_RESOURCE: "error setting rlimit")
# builds with "--runtime runc --ulimit nofile=N:N --ulimit nproc=M:M", N and M within the host's own limits.
set -eu

image=${1:-localhost/pushstr:latest}
base=${2:-docker.io/library/python:3.11-slim-bookworm}
local_base=${LOCAL_BASE_IMAGE:-localhost/pushstr-base:bookworm}

if command -v podman >/dev/null 2>&1; then
    engine=podman
    format="--format docker" # the OCI format has no HEALTHCHECK
elif command -v docker >/dev/null 2>&1; then
    engine=docker
    format=""
else
    echo "build-image.sh: neither podman nor docker is installed" >&2
    exit 1
fi

cd "$(dirname "$0")/.."
if ! "$engine" image inspect "$base" >/dev/null 2>&1 && ! "$engine" pull "$base"; then
    echo "build-image.sh: cannot pull $base; building on a Debian base made with debootstrap ($local_base)" >&2
    if ! "$engine" image inspect "$local_base" >/dev/null 2>&1; then
        deploy/debian-base.sh "$engine" "$local_base"
    fi
    base=$local_base
fi

# shellcheck disable=SC2086 # the flags are meant to split into words
"$engine" build $format ${IMAGE_BUILD_FLAGS:-} --build-arg BASE_IMAGE="$base" --tag "$image" .
echo "built $image on $base"
