#!/usr/bin/env bash
# Installs what fastfuse's tests and bench need on a fresh Debian 12 machine.
# Idempotent: only what is missing is installed. Run as root.
set -euo pipefail
# Mounts and package installs need root: as another user, go through sudo
# (keeping PATH and HOME, where cargo lives) when there is one.
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        exec sudo env PATH="$PATH" HOME="$HOME" "$0" "$@"
    fi
    echo "$(basename "$0"): run as root (mounts and package installs need it)" >&2
    exit 1
fi

need=()
for pkg in fuse3 fio mergerfs bindfs attr util-linux libfuse3-dev gcc pkg-config linux-perf \
    curl g++ meson ninja-build liburing-dev libnuma-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"

# The seed's own server, the bench's libfuse-ll peer: passthrough_ll from
# the example sources Debian's libfuse3-dev ships (libfuse 3.14), built
# against the packaged libfuse3. Nothing is fetched; rebuilt only when the
# source is newer than the binary.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
examples=/usr/share/doc/libfuse3-dev/examples
peers="$repo/target/peers"
ll_src="$examples/passthrough_ll.c"
[ -e "$ll_src" ] || ll_src="$ll_src.gz"
# libfuse's own build (meson) compiles its examples with its private
# config.h, which on Linux turns on fallocate and copy_file_range
# (HAVE_FALLOCATE, HAVE_POSIX_FALLOCATE, HAVE_COPY_FILE_RANGE); built
# alone, as Debian's example Makefile does, passthrough_ll answers
# EOPNOTSUPP to both, and fio, finding no fallocate, never preallocates:
# not the server of the seed's measurements. The stamp rebuilds it when
# these flags change.
ll_flags="-DHAVE_FALLOCATE -DHAVE_POSIX_FALLOCATE -DHAVE_COPY_FILE_RANGE"
if [ ! -x "$peers/passthrough_ll" ] || [ "$ll_src" -nt "$peers/passthrough_ll" ] \
    || [ "$(cat "$peers/passthrough_ll.flags" 2>/dev/null)" != "$ll_flags" ]; then
    echo "setup: building $peers/passthrough_ll from $examples"
    mkdir -p "$peers/src"
    for f in passthrough_ll.c passthrough_helpers.h; do
        if [ -e "$examples/$f" ]; then
            cp "$examples/$f" "$peers/src/$f"
        else
            zcat "$examples/$f.gz" >"$peers/src/$f"
        fi
    done
    # shellcheck disable=SC2046,SC2086 # pkg-config and $ll_flags print several words
    gcc -Wall -O2 $ll_flags $(pkg-config fuse3 --cflags) "$peers/src/passthrough_ll.c" \
        -o "$peers/passthrough_ll.tmp" $(pkg-config fuse3 --libs)
    mv "$peers/passthrough_ll.tmp" "$peers/passthrough_ll"
    echo "$ll_flags" >"$peers/passthrough_ll.flags"
fi
# libfuse's passthrough_hp, the bench's libfuse-hp and libfuse-hp-uring:
# libfuse 3.18.3, the first release line with FUSE over io_uring (Debian 12
# ships 3.14), from the source Debian unstable packages, its checksum
# pinned here. Linked statically, so the binary stands alone. A machine that
# cannot fetch it goes on without it: the bench then says the peer is
# missing, and nothing else needs it.
hp_version=3.18.3
hp_sha256=bcd19582c5e30f7fe45dd86a5540e998590aa01903afc7ebcbeea6c8ac5421ee
hp_tar="fuse3_$hp_version.orig.tar.gz"
if [ "$(cat "$peers/passthrough_hp.version" 2>/dev/null)" != "$hp_version" ] \
    || [ ! -x "$peers/passthrough_hp" ]; then
    echo "setup: building $peers/passthrough_hp from libfuse $hp_version"
    hp_dir="$peers/libfuse-$hp_version"
    rm -rf "$hp_dir" && mkdir -p "$hp_dir"
    if curl -fsS --retry 3 -o "$hp_dir/$hp_tar" \
        "http://deb.debian.org/debian/pool/main/f/fuse3/$hp_tar" \
        && echo "$hp_sha256  $hp_dir/$hp_tar" | sha256sum -c --quiet - \
        && tar -xzf "$hp_dir/$hp_tar" -C "$hp_dir" --strip-components=1 \
        && meson setup "$hp_dir/build" "$hp_dir" -Ddefault_library=static \
            -Dexamples=true -Dutils=false -Dtests=false >"$hp_dir/meson.log" \
        && ninja -C "$hp_dir/build" example/passthrough_hp >"$hp_dir/ninja.log"; then
        cp "$hp_dir/build/example/passthrough_hp" "$peers/passthrough_hp.tmp"
        mv "$peers/passthrough_hp.tmp" "$peers/passthrough_hp"
        echo "$hp_version" >"$peers/passthrough_hp.version"
        rm -rf "$hp_dir"
    else
        echo "setup: warning: could not build libfuse $hp_version's passthrough_hp (logs in $hp_dir); the bench runs without it" >&2
    fi
fi
# The POSIX suite and the data-integrity exerciser, pinned to the versions
# the README's results were taken with.
command -v pjdfstest >/dev/null || cargo install --locked --quiet pjdfstest --version 0.2.2
command -v fsx >/dev/null || cargo install --locked --quiet fsx --version 0.3.2
rustup component add clippy rustfmt >/dev/null 2>&1 || true

# The fusectl filesystem shows each FUSE connection (and lets one abort a
# stuck one); the tests read it.
if [ -d /sys/fs/fuse/connections ] && ! mountpoint -q /sys/fs/fuse/connections; then
    mount -t fusectl none /sys/fs/fuse/connections || true
fi

# Debian's udev rule makes /dev/fuse 0666 so that users can mount through
# fusermount3; containers often create it 0600. The unprivileged-mount
# tests need the standard mode.
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    chmod 0666 /dev/fuse
fi
