#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on 127.0.0.1 and a free port, in a temporary
# directory, run by an unprivileged user (initdb refuses root).
#
#   eval "$(bash .ci/postgres.sh start)"     # exports MESH_TEST_POSTGRES and MESH_PG_DIR
#   cargo test --workspace                   # the PostgreSQL tests now run instead of skipping
#   bash .ci/postgres.sh stop "$MESH_PG_DIR"
#
# Installs Debian's postgresql package when no server binaries are found.
set -euo pipefail

find_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

start() {
    local bindir
    bindir=$(find_bindir)
    if [ -z "$bindir" ]; then
        echo "postgres.sh: installing postgresql from Debian's packages" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends postgresql >&2
        bindir=$(find_bindir)
    fi
    [ -n "$bindir" ] || { echo "postgres.sh: no initdb found" >&2; exit 1; }

    local dir port run_as=()
    dir=$(mktemp -d /tmp/mesh-pg.XXXXXX)
    chmod 0755 "$dir"
    if [ "$(id -u)" = 0 ]; then
        local user=postgres
        if ! id "$user" >/dev/null 2>&1; then
            user=meshpg
            id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
        fi
        chown "$user" "$dir"
        run_as=(runuser -u "$user" --)
    fi
    # A free port: bind port 0 on loopback and read what the kernel gave.
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    "${run_as[@]}" "$bindir/initdb" -D "$dir/data" -U mesh --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    # Loopback only, no Unix socket outside the directory; fsync off: a test server is thrown
    # away, and a killed hub process (what the tests kill) never loses PostgreSQL's commits.
    "${run_as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300 -c shared_buffers=64MB" \
        start >&2 || { cat "$dir/server.log" >&2; exit 1; }
    "${run_as[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U mesh mesh >&2
    echo "export MESH_TEST_POSTGRES='postgres://mesh@127.0.0.1:$port/mesh'"
    echo "export MESH_PG_DIR='$dir'"
}

stop() {
    local dir=${1:-}
    [ -n "$dir" ] && [ -d "$dir/data" ] || { echo "postgres.sh stop: no server directory given" >&2; exit 1; }
    local bindir run_as=()
    bindir=$(find_bindir)
    if [ "$(id -u)" = 0 ]; then
        run_as=(runuser -u "$(stat -c %U "$dir")" --)
    fi
    "${run_as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
