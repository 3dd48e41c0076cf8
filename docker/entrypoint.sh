#!/bin/sh
# The image's entrypoint. The container runs as a non-root user; a mounted
# directory owned by someone else (often root) would fail deep inside a store
# client with a traceback. Check every local path the command writes, and say in
# one line whose it is and which --user fits, before running anything.
set -eu

# The first path under $1 (itself, or with $2 = deep its contents three levels
# down) that this user cannot write; for a path not made yet, its nearest
# existing parent.
unwritable() {
    path=$1
    while [ ! -e "$path" ]; do
        parent=$(dirname "$path")
        [ "$parent" = "$path" ] && return 0
        path=$parent
    done
    if [ "${2:-}" = deep ] && [ -d "$path" ] && [ "$path" = "$1" ]; then
        find "$path" -maxdepth 3 ! -writable -print -quit 2>/dev/null
    elif [ ! -w "$path" ]; then
        echo "$path"
    fi
}

check() {
    [ -z "$1" ] && return 0
    bad=$(unwritable "$1" "${2:-}")
    [ -z "$bad" ] && return 0
    owner=$(stat -c %u:%g "$bad")
    echo "error: $bad is owned by $owner and not writable by uid $(id -u); run the container with --user $owner, or chown -R $(id -u):$(id -g) the mounted directory" >&2
    exit 2
}

# The value of a flag that names a local path the run writes, or nothing.
local_path() {
    case $1 in
        *://*) ;;                       # a server: nothing local to write
        qdrant:* | parquet:*) echo "${1#*:}" ;;
        *) echo "$1" ;;
    esac
}

# The metrics file is replaced by a rename: only its directory needs to be writable.
check_flag() {
    case $1 in
        --metrics-file) check "$(dirname "$2")" ;;
        *) check "$(local_path "$2")" deep ;;
    esac
}

expect=""
for arg in "$@"; do
    if [ -n "$expect" ]; then
        check_flag "$expect" "$arg"
        expect=""
        continue
    fi
    case $arg in
        --uri | --target-uri | --metrics-file | --snapshot-dir | --bulk-storage | --output | \
            --out-dir | --workdir) expect=$arg ;;
        --uri=* | --target-uri=* | --metrics-file=* | --snapshot-dir=* | --bulk-storage=* | \
            --output=* | --out-dir=* | --workdir=*) check_flag "${arg%%=*}" "${arg#*=}" ;;
    esac
done

exec "${DMU_PROGRAM:-dmu-migrate}" "$@"
