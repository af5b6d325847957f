#!/usr/bin/env bash
# Installs what the job's tests, benchmarks and local runs need on Debian 12,
# and nothing that is already there: PostgreSQL 15, the pgvector extension
# (built from Debian's own source package, as Debian 12 does not ship it),
# musl's C compiler and Rust's musl target for the static binary, curl, and
# /usr/bin/time for the memory figures. Safe to run again.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PG_BIN/pg_config}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing packages; run as root or install: $*" >&2
        exit 1
    fi
}

apt_updated=""
apt_install() {
    need_root "$@"
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Step 1: the server, the headers pgvector builds against, and the tools.
missing=()
[ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
[ -x "$PG_CONFIG" ] && [ -d "$("$PG_CONFIG" --includedir-server 2>/dev/null)" ] \
    || missing+=(postgresql-server-dev-15)
command -v make >/dev/null || missing+=(make)
command -v gcc >/dev/null || missing+=(gcc)
command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
[ -x /usr/bin/time ] || missing+=(time)
command -v psql >/dev/null || missing+=(postgresql-client-15)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v curl >/dev/null || missing+=(curl)
command -v file >/dev/null || missing+=(file)
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    apt_install "${missing[@]}"
fi

# Step 2: pgvector, unless this server already has it.
sharedir=$("$PG_CONFIG" --sharedir)
if [ ! -f "$sharedir/extension/vector.control" ]; then
    echo "install-deps: building pgvector from Debian's source package" >&2
    need_root pgvector
    # Debian 12 has no pgvector; a newer suite's source index has. Only the
    # source index is added, so no binary package can come from that suite.
    src_list=/etc/apt/sources.list.d/pgvector-src.sources
    if [ ! -f "$src_list" ]; then
        cat >"$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt_updated=""
    fi
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (
        cd "$work"
        apt-get source -qq --only-source pgvector >/dev/null 2>&1 \
            || apt-get source --only-source pgvector
        cd pgvector-*/
        make -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
        make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
    )
    echo "install-deps: pgvector installed" >&2
fi

# Step 3: Rust's musl target, for the static binary (ring's C parts build
# with musl-gcc from musl-tools).
if command -v rustup >/dev/null \
    && ! rustup target list --installed | grep -q x86_64-unknown-linux-musl; then
    echo "install-deps: adding Rust's x86_64-unknown-linux-musl target" >&2
    rustup target add x86_64-unknown-linux-musl >/dev/null
fi
