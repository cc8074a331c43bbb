# Helpers shared by the install scripts (sourced, not run).

# Runs "$@" as root: directly when root (CI), through sudo otherwise, or fails saying what it
# needed.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "$(basename "$0"): need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# Prints (and creates) the cache folder $1 outside the clone: under $KAFSCALE_CACHE or
# /var/cache/kafscale-ci when writable, else under the user's cache folder.
cache_dir() {
    local dir="${KAFSCALE_CACHE:-/var/cache/kafscale-ci}/$1"
    if mkdir -p "$dir" 2>/dev/null && [[ -w "$dir" ]]; then
        echo "$dir"
        return
    fi
    dir="${XDG_CACHE_HOME:-$HOME/.cache}/kafscale/$1"
    mkdir -p "$dir"
    echo "$dir"
}
