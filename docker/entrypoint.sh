#!/bin/sh
# Container entrypoint: turn *_FILE secrets into the environment variables wattlens reads, then
# exec `wattlens "$@"`. A secret never appears in argv, `docker inspect` or the logs:
#   WATTLENS_INFLUX_TOKEN_FILE=/run/secrets/influx_token  ->  WATTLENS_INFLUX_TOKEN
#   WATTLENS_AGENT_TOKEN_FILE=/run/secrets/agent_token    ->  WATTLENS_AGENT_TOKEN
set -eu

for name in WATTLENS_INFLUX_TOKEN WATTLENS_AGENT_TOKEN; do
    eval "file=\${${name}_FILE:-}"
    eval "value=\${${name}:-}"
    if [ -n "$file" ]; then
        if [ -n "$value" ]; then
            echo "wattlens-entrypoint: error: both $name and ${name}_FILE are set; keep one" >&2
            exit 2
        fi
        if [ ! -r "$file" ]; then
            echo "wattlens-entrypoint: error: ${name}_FILE=$file is not a readable file" >&2
            exit 2
        fi
        value=$(cat "$file")
        if [ -z "$value" ]; then
            echo "wattlens-entrypoint: error: ${name}_FILE=$file is empty" >&2
            exit 2
        fi
        export "$name=$value"
        unset "${name}_FILE"
    fi
done

exec wattlens "$@"
