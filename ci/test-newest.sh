#!/usr/bin/env bash
# `make test-newest`: run the test suite on the newest stack users get today: Debian trixie's
# Python 3.13 with the newest releases from PyPI (zarr 3.2+ needs Python >= 3.12).
#
# The Debian root is built once with debootstrap and cached outside the repo
# (SHARDEDSTORE_NEWEST_CACHE, default ~/.cache/shardedstore-newest). Each run copies the working
# tree into a fresh directory inside that root, mounts /proc and /dev/shm there, creates a venv,
# installs the project's wheel with ".[test]" and the newest releases (wheels only), runs pytest,
# then unmounts and removes only what it created.
#
#   ci/test-newest.sh                  fail if the machine cannot do it
#   ci/test-newest.sh --if-possible    print why and exit 0 if the machine cannot do it (.ci/run)
#
# Extra arguments after the flags are passed to pytest.
set -euo pipefail

IF_POSSIBLE=0
if [ "${1:-}" = "--if-possible" ]; then
    IF_POSSIBLE=1
    shift
fi

REPO=$(cd "$(dirname "$0")/.." && pwd -P)
SUITE=trixie
CACHE=${SHARDEDSTORE_NEWEST_CACHE:-${HOME:-/root}/.cache/shardedstore-newest}
MARKER=.shardedstore-newest-root  # written into every root this script creates

cannot() {
    if [ "$IF_POSSIBLE" = 1 ]; then
        echo "test-newest: skipped: $*"
        exit 0
    fi
    echo "test-newest: cannot run: $*" >&2
    exit 1
}

log() { echo "test-newest: $*"; }

# --- can this machine do it? --------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || cannot "needs Linux (chroot), this is $(uname -s)"
[ "$(id -u)" = 0 ] || cannot "needs root for debootstrap and chroot (run as root, or rely on the GitHub workflow's 3.13 job)"
if ! command -v debootstrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        log "installing debootstrap with apt-get"
        apt-get install -y -q debootstrap >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q debootstrap >/dev/null 2>&1; } \
            || true
    fi
    command -v debootstrap >/dev/null 2>&1 || cannot "debootstrap is not installed and apt-get could not install it"
fi
[ -e "/usr/share/debootstrap/scripts/$SUITE" ] || cannot "this debootstrap does not know Debian $SUITE (upgrade debootstrap)"

# The Debian mirror: DEBIAN_MIRROR, else the one this machine's apt already uses.
mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local files=() f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || return 0
    # deb822 "URIs: <url>" or one-line "deb [opts] <url> <suite> main"; the main archive, not security.
    awk '
        /^[[:space:]]*#/ { next }
        $1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
        $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }
    ' "${files[@]}" | grep -E '/debian/?$' | head -n 1
}
MIRROR=$(mirror)
[ -n "$MIRROR" ] || cannot "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR"

# --- safety helpers -----------------------------------------------------------------------------
# Mount points at or below $1 (from the kernel's table, deepest first).
mounts_under() {
    local base=$1
    awk -v base="$base" '{ if ($5 == base || index($5, base "/") == 1) print $5 }' /proc/self/mountinfo \
        | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

# Remove a directory this script created: refuses anything but a real directory that is the
# partial root or a run directory in the root's /tmp, and anything with a mount point inside
# it; never crosses into another filesystem.
remove_ours() {
    local dir=$1 real
    [ -n "$dir" ] || { echo "test-newest: refusing to remove an empty path" >&2; return 1; }
    [ -e "$dir" ] || return 0
    [ ! -L "$dir" ] && [ -d "$dir" ] || { echo "test-newest: refusing to remove $dir: not a directory" >&2; return 1; }
    real=$(cd "$dir" && pwd -P)
    case "$real" in
        "$CACHE_REAL/$SUITE.partial" | "$CACHE_REAL/$SUITE/tmp/run."?*) ;;
        *) echo "test-newest: refusing to remove $real: not made by this script" >&2; return 1 ;;
    esac
    if [ -n "$(mounts_under "$real")" ]; then
        echo "test-newest: refusing to remove $real: something is mounted inside it" >&2
        return 1
    fi
    rm -rf --one-file-system -- "$real"
}

mkdir -p "$CACHE"
CACHE_REAL=$(cd "$CACHE" && pwd -P)
[ "$CACHE_REAL" != / ] || cannot "the cache directory resolves to /"
case "$CACHE_REAL" in
    *[[:space:]]*) cannot "the cache path has white space: $CACHE_REAL (set SHARDEDSTORE_NEWEST_CACHE)" ;;
esac
ROOT=$CACHE_REAL/$SUITE
# One run at a time: a second run would share (and then unmount) the first one's /proc.
exec 9>"$CACHE_REAL/.lock"
if ! flock -n 9; then
    log "waiting for another run to finish"
    flock 9
fi

# --- build the root once ------------------------------------------------------------------------
if [ ! -f "$ROOT/$MARKER" ]; then
    PARTIAL=$CACHE_REAL/$SUITE.partial
    if [ -e "$PARTIAL" ]; then
        # Left by an interrupted build: unmount what debootstrap mounted, then start over.
        [ -f "$PARTIAL/$MARKER.building" ] || cannot "$PARTIAL exists but was not made by this script; remove it by hand"
        for m in $(mounts_under "$PARTIAL"); do umount "$m" || true; done
        remove_ours "$PARTIAL"
    fi
    [ ! -e "$ROOT" ] || cannot "$ROOT exists but is not a finished root made by this script; remove it by hand"
    log "building a Debian $SUITE root in $ROOT from $MIRROR (once; a few minutes)"
    start=$(date +%s)
    mkdir -p "$PARTIAL"
    touch "$PARTIAL/$MARKER.building"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,unzip,ca-certificates \
        "$SUITE" "$PARTIAL" "$MIRROR" >"$CACHE_REAL/debootstrap.log" 2>&1 \
        || { tail -n 20 "$CACHE_REAL/debootstrap.log" >&2; cannot "debootstrap failed (log: $CACHE_REAL/debootstrap.log)"; }
    [ -z "$(mounts_under "$PARTIAL")" ] || cannot "debootstrap left mounts inside $PARTIAL"
    rm -f "$PARTIAL/$MARKER.building"
    touch "$PARTIAL/$MARKER"
    mv "$PARTIAL" "$ROOT"
    log "root built in $(($(date +%s) - start)) s"
fi

# --- one run ------------------------------------------------------------------------------------
start=$(date +%s)
RUN=$(mktemp -d "$ROOT/tmp/run.XXXXXX")
RUN_IN=/tmp/$(basename "$RUN")
MOUNTED=()

cleanup() {
    local i
    # Unmount only what this run mounted, newest first.
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" || true
    done
    remove_ours "$RUN" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_once() {  # mount_once TYPE TARGET: mount a fresh TYPE filesystem on TARGET unless one is there
    local type=$1 target=$2
    mkdir -p "$target"
    [ "$(realpath -e "$target")" = "$target" ] || cannot "$target leads elsewhere (symlink); refusing to mount on it"
    if [ -z "$(awk -v t="$target" '$5 == t' /proc/self/mountinfo)" ]; then
        mount -t "$type" "$type" "$target"
        MOUNTED+=("$target")
    fi
}
mount_once proc "$ROOT/proc"
mount_once tmpfs "$ROOT/dev/shm"  # multiprocessing's semaphores live there
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true

# The working tree as it is (uncommitted edits included), without venvs, caches or outputs.
tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./site --exclude=./demo-output \
    --exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.hypothesis \
    --exclude=__pycache__ -cf - . | tar -C "$RUN" -xf -

# Trust what this machine's pip trusts (a proxy's CA, say): its CA bundle goes in with the run.
for ca in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$ca" ] && [ -f "$ca" ]; then
        cp -L "$ca" "$RUN/.host-ca.crt"
        break
    fi
done
CA_ENV=()
if [ -f "$RUN/.host-ca.crt" ]; then
    CA_ENV=(PIP_CERT="$RUN_IN/.host-ca.crt" SSL_CERT_FILE="$RUN_IN/.host-ca.crt"
        REQUESTS_CA_BUNDLE="$RUN_IN/.host-ca.crt")
fi

log "installing the newest releases into a fresh venv (pip cache kept in the root)"
chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-60}" \
    ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} "${CA_ENV[@]}" CI="${CI:-}" /bin/sh -euc '
    cd "$1"; shift
    if command -v cc >/dev/null || command -v gcc >/dev/null; then
        echo "test-newest: note: this root has a C compiler"
    else
        echo "test-newest: no C compiler in this root"
    fi
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    # Wheels only, as a user without a compiler gets it: the project built into a wheel, every
    # dependency from a wheel. The tests import the copied source tree, the same code.
    .venv/bin/python -m pip wheel --quiet --no-deps --wheel-dir dist .
    .venv/bin/python -m pip install --quiet --only-binary=:all: "$(ls dist/shardedstore-*.whl)[test]"
    .venv/bin/python -c "
import platform, numpy, xarray, zarr
print(f\"test-newest: Python {platform.python_version()}, zarr {zarr.__version__}, \"
      f\"numpy {numpy.__version__}, xarray {xarray.__version__}\")"
    mkdir tmp
    TMPDIR="$PWD/tmp" .venv/bin/python -m pytest -p no:cacheprovider "$@"
' sh "$RUN_IN" "$@" && status=0 || status=$?
log "run took $(($(date +%s) - start)) s (pytest exit status $status)"
exit "$status"
