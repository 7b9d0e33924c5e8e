#!/bin/sh
# A Debian bookworm base image with python3 and its venv module, made with debootstrap from the Debian mirror that
# apt on this host uses, and imported into a container engine: debian-base.sh ENGINE TAG (as root).
#
# DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR override the mirrors read from /etc/apt/sources.list*. CA certificates
# this host added to /usr/local/share/ca-certificates (a TLS-inspecting proxy's, say) are trusted in the base too,
# so builds and pushes through that proxy verify.
set -eu

engine=$1
tag=$2
suite=bookworm

urls=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^[:space:]]+' | sed 's#/*$##' || true)
mirror=${DEBIAN_MIRROR:-$(printf '%s\n' "$urls" | grep -E '/debian$' | head -n 1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-$(printf '%s\n' "$urls" | grep -E '/debian-security$' | head -n 1 || true)}
security=${security:-http://deb.debian.org/debian-security}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT INT TERM

echo "debian-base.sh: debootstrap $suite from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$root" "$mirror"

cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES
for cert in /usr/local/share/ca-certificates/*.crt; do
    if [ -e "$cert" ]; then cp "$cert" "$root/usr/local/share/ca-certificates/"; fi
done
# Slim like Debian's own slim images: no manuals, documentation or translations (copyright files stay), neither
# from debootstrap nor from packages installed later.
cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EXCLUDES'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EXCLUDES
find "$root/usr/share/doc" ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -depth -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" sh -c 'update-ca-certificates >/dev/null && apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q && apt-get clean'
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/apt/* "$root/etc/resolv.conf"

tar -C "$root" --numeric-owner -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag"
echo "debian-base.sh: imported $tag" >&2
