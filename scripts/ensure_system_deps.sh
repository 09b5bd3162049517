#!/usr/bin/env bash
# Make sure the system programs the test suite needs are present: redis-server.
# Honours EVENTKIT_REDIS_SERVER (path to a redis-server binary) when it is set and executable.
set -euo pipefail

fail() {
    echo "error: $*" >&2
    exit 1
}

redis_missing_msg="redis-server is required: install Debian's redis-server package (apt-get install redis-server) or set EVENTKIT_REDIS_SERVER to its path"

if [[ -n "${EVENTKIT_REDIS_SERVER:-}" ]]; then
    [[ -x "${EVENTKIT_REDIS_SERVER}" ]] \
        || fail "EVENTKIT_REDIS_SERVER=${EVENTKIT_REDIS_SERVER} is not an executable file"
    exit 0
fi

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "redis-server not found: installing Debian's redis-server package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends redis-server
    command -v redis-server >/dev/null 2>&1 || fail "$redis_missing_msg"
    exit 0
fi

fail "$redis_missing_msg"
