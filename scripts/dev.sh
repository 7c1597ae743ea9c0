#!/usr/bin/env bash
# The local demo (make dev): a Vault dev server, a private CA with server and client
# certificates, a demo account with keys of different scopes, keygate with mTLS on its
# ext_authz gRPC listener, and keygate's mTLS terminator in front of an echo server that
# shows what the application receives. Then it prints curl commands for each outcome.
#
# Everything listens on loopback. State lives in .dev/ (KEYGATE_DEV_DIR; mode 0700, files
# 0600). No secret is ever on a command line: Vault reads its root token from
# VAULT_DEV_ROOT_TOKEN_ID, keygate from VAULT_TOKEN, curl its headers from files.
# Ctrl-C stops everything. Ports: KEYGATE_DEV_{VAULT,GRPC,HTTP,ADMIN,TERMINATE,ECHO}_PORT.
#
# Usage analytics are on: KEYGATE_DEV_USAGE (make dev USAGE=…) is sqlite (the default: a
# file in the state directory) or postgres: a PostgreSQL cluster of Debian's packages
# (/usr/lib/postgresql/*/bin) on 127.0.0.1 (KEYGATE_DEV_POSTGRES_PORT, default the first
# free port from 5433), no unix socket, password authentication with a generated
# password that only files hold (0600). It lives in .dev/postgres and is kept across
# runs; as root (PostgreSQL refuses to run as root) it runs as the postgres user in a
# temporary directory removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
umask 077

dev=${KEYGATE_DEV_DIR:-.dev}
vault_port=${KEYGATE_DEV_VAULT_PORT:-8200}
grpc_port=${KEYGATE_DEV_GRPC_PORT:-9001}
http_port=${KEYGATE_DEV_HTTP_PORT:-9002}
admin_port=${KEYGATE_DEV_ADMIN_PORT:-9003}
term_port=${KEYGATE_DEV_TERMINATE_PORT:-8443}
echo_port=${KEYGATE_DEV_ECHO_PORT:-3000}
usage=${KEYGATE_DEV_USAGE:-sqlite}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}

say() { echo "dev: $*" >&2; }
die() { say "$*"; exit 1; }

case $usage in
  sqlite | postgres) ;;
  *) die "KEYGATE_DEV_USAGE (make dev USAGE=…) is \"$usage\": want sqlite or postgres" ;;
esac

mkdir -p "$dev"
chmod 0700 "$dev"

# One instance per state directory: the lock is held until this script exits.
exec 9>>"$dev/lock"
if ! flock -n 9; then
  die "another make dev is already running with $dev (pid $(cat "$dev/pid" 2>/dev/null || echo '?')).
     Stop it with Ctrl-C in its terminal, or run a second one with its own KEYGATE_DEV_DIR and ports."
fi
echo $$ >"$dev/pid"

# Ports another program holds would make the demo talk to the wrong server.
for p in "vault:$vault_port:KEYGATE_DEV_VAULT_PORT" "grpc:$grpc_port:KEYGATE_DEV_GRPC_PORT" \
  "health:$http_port:KEYGATE_DEV_HTTP_PORT" "admin:$admin_port:KEYGATE_DEV_ADMIN_PORT" \
  "terminator:$term_port:KEYGATE_DEV_TERMINATE_PORT" "echo:$echo_port:KEYGATE_DEV_ECHO_PORT"; do
  IFS=: read -r what port var <<<"$p"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port ($what) on 127.0.0.1 is already in use: another make dev, or another program.
     Stop it, or pick another port with $var=…"
  fi
done

# A free loopback port for PostgreSQL, unless one is given.
if [ "$usage" = postgres ]; then
  pg_port=${KEYGATE_DEV_POSTGRES_PORT:-}
  if [ -z "$pg_port" ]; then
    for p in $(seq 5433 5532); do
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then pg_port=$p; break; fi
    done
    [ -n "$pg_port" ] || die "no free port from 5433 to 5532 for PostgreSQL: set KEYGATE_DEV_POSTGRES_PORT"
  elif (exec 3<>"/dev/tcp/127.0.0.1/$pg_port") 2>/dev/null; then
    die "port $pg_port (postgres) on 127.0.0.1 is already in use. Pick another with KEYGATE_DEV_POSTGRES_PORT=…"
  fi
fi

pids=()
pg_pid=
pg_tmp=
stop() {
  trap - INT TERM EXIT
  # Newest first: keygate, then the echo server, then Vault; PostgreSQL (in its own
  # session, out of Ctrl-C's reach) once keygate's last usage flush is in.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    [ "${pids[i]}" = "$pg_pid" ] || kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do [ "$pid" = "$pg_pid" ] || wait "$pid" 2>/dev/null || true; done
  if [ -n "$pg_pid" ]; then
    kill -INT "$pg_pid" 2>/dev/null || true # a fast shutdown
    wait "$pg_pid" 2>/dev/null || true
  fi
  rm -f "$dev/pid" "$dev/vault.env"
  if [ -n "$pg_tmp" ]; then rm -rf "$pg_tmp"; fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT
# start CMD…: runs a process in the background, without the lock's descriptor.
start() { "$@" 9>&- & pids+=($!); echo "${pids[*]}" >"$dev/pids"; }

vault_bin=$(scripts/vault-build.sh)
say "building keygate $version and the echo upstream (go build; cached after the first run)"
mkdir -p bin
# Static, like make image: the two share Go's build cache.
CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$version" -o bin/keygate ./cmd/keygate
CGO_ENABLED=0 go build -trimpath -o bin/keygate-echo ./scripts/echo

# Certificates survive restarts; keygate certs never overwrite a file.
tls="$dev/tls"
if [ ! -f "$tls/ca.pem" ]; then
  say "making a private CA and certificates in $tls/ (keygate certs)"
  bin/keygate certs init-ca --dir "$tls" --name "keygate dev CA" >/dev/null
  # keygate's TLS listeners (gRPC and terminator); keygate.internal is the name Envoy checks.
  bin/keygate certs issue --ca-dir "$tls" --server --cn keygate --dns keygate.internal,localhost,127.0.0.1 --out "$tls/keygate" >/dev/null
  # Envoy: its listener for clients, and its client certificate towards keygate.
  bin/keygate certs issue --ca-dir "$tls" --server --cn envoy --dns localhost,127.0.0.1 --out "$tls/envoy" >/dev/null
  bin/keygate certs issue --ca-dir "$tls" --client --cn envoy --spiffe-id spiffe://dev.local/ns/demo/sa/envoy --out "$tls/envoy-to-keygate" >/dev/null
  # The demo's client (curl).
  bin/keygate certs issue --ca-dir "$tls" --client --cn demo-client --spiffe-id spiffe://dev.local/ns/demo/sa/client --out "$tls/client" >/dev/null
fi
chmod 0600 "$tls"/*.pem

# The usage store: a SQLite file, or a PostgreSQL cluster started here.
if [ "$usage" = postgres ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/postgres" ] ||
    die "USAGE=postgres needs Debian's postgresql package (initdb and postgres in /usr/lib/postgresql/*/bin): apt-get install postgresql"
  pgdata="$dev/postgres"
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses root, and the postgres user cannot enter the 0700 state directory.
    pg_tmp=$(mktemp -d /tmp/keygate-dev-pg.XXXXXX)
    chown postgres: "$pg_tmp"
    pgdata="$pg_tmp/data"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  fi
  if [ ! -f "$dev/postgres.password" ] || [ ! -f "$pgdata/PG_VERSION" ]; then
    say "making a PostgreSQL cluster in $pgdata (initdb)"
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$dev/postgres.password"
    pwfile="$dev/postgres.password"
    if [ -n "$pg_tmp" ]; then
      pwfile="$pg_tmp/password"
      install -m 0600 -o postgres "$dev/postgres.password" "$pwfile"
    fi
    rm -rf "$pgdata"
    "${as_pg[@]}" "$pg_bin/initdb" -D "$pgdata" --username=keygate --pwfile="$pwfile" --auth=scram-sha-256 \
      --encoding=UTF8 --locale=C --no-sync >"$dev/postgres-init.log" 2>&1 ||
      { cat "$dev/postgres-init.log" >&2; die "initdb failed"; }
    if [ -n "$pg_tmp" ]; then rm -f "$pwfile"; fi
  fi
  say "starting PostgreSQL on 127.0.0.1:$pg_port (log: $dev/postgres.log)"
  # Loopback TCP only: no unix socket. Its stderr goes through this script (root can
  # write $dev; the postgres user could not).
  start setsid "${as_pg[@]}" "$pg_bin/postgres" -D "$pgdata" -p "$pg_port" -h 127.0.0.1 \
    -c unix_socket_directories= -c synchronous_commit=off >"$dev/postgres.log" 2>&1
  pg_pid=${pids[-1]}
  for _ in $(seq 100); do
    "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
    kill -0 "$pg_pid" 2>/dev/null || { cat "$dev/postgres.log" >&2; die "PostgreSQL did not start"; }
    sleep 0.1
  done
  "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" || { cat "$dev/postgres.log" >&2; die "PostgreSQL is not answering on 127.0.0.1:$pg_port"; }
  # The DSN, password included, only in a file.
  printf 'postgres://keygate:%s@127.0.0.1:%s/postgres?sslmode=disable\n' "$(cat "$dev/postgres.password")" "$pg_port" >"$dev/usage-dsn"
  usage_yaml="usage: {store: postgres, postgres_dsn_file: $dev/usage-dsn, flush: 2s}"
  usage_where="PostgreSQL 127.0.0.1:$pg_port ($pgdata)"
else
  usage_yaml="usage: {store: sqlite, sqlite_path: $dev/usage.db, flush: 2s}"
  usage_where="SQLite $dev/usage.db"
fi

cat >"$dev/keygate.yaml" <<YAML
# Written by scripts/dev.sh. Vault's address and token come from VAULT_ADDR and VAULT_TOKEN.
grpc_addr: 127.0.0.1:$grpc_port
http_addr: 127.0.0.1:$http_port
admin_addr: 127.0.0.1:$admin_port
deny_profile: magicx
key_prefix: mgx-sk-
log_level: info
audit_log: $dev/audit.log
usage_flush: 10s
shutdown_grace: 5s
vault: {mount: secret, path: keygate, lookup_timeout: 150ms}
$usage_yaml
tls:
  grpc:                          # Envoy -> keygate: mTLS, as envoy/configs/sidecar-mtls.yaml
    cert_file: $tls/keygate.pem
    key_file: $tls/keygate-key.pem
    client_ca_file: $tls/ca.pem
    require_client_cert: true
terminate:
  tls: {cert_file: $tls/keygate.pem, key_file: $tls/keygate-key.pem, client_ca_file: $tls/ca.pem}
  max_body: 65536
policy:
  routes:
  - {name: chat,   methods: [POST], path: /v1/chat/completions, scope: chat:completions, models: true}
  - {name: models, methods: [GET],  path: /v1/models, scope: models:read}
  - {name: model,  methods: [GET],  pattern: /v1/models/*, scope: models:read}
rate_limits:
  backend: local
  plans:
    demo-trial: {per_minute: 2, burst: 2}
YAML

token="dev-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export VAULT_ADDR="http://127.0.0.1:$vault_port"
say "starting a Vault dev server on $VAULT_ADDR (log: $dev/vault.log)"
# The root token goes through the environment, never the command line.
VAULT_DEV_ROOT_TOKEN_ID="$token" start "$vault_bin" server -dev -dev-listen-address "127.0.0.1:$vault_port" \
  -dev-no-store-token >"$dev/vault.log" 2>&1
vault_pid=${pids[-1]}
export VAULT_TOKEN="$token"
for _ in $(seq 100); do
  curl -fsS "$VAULT_ADDR/v1/sys/health" >/dev/null 2>&1 && break
  kill -0 "$vault_pid" 2>/dev/null || { cat "$dev/vault.log" >&2; die "Vault did not start"; }
  sleep 0.1
done
curl -fsS "$VAULT_ADDR/v1/sys/health" >/dev/null 2>&1 || { cat "$dev/vault.log" >&2; die "Vault is not answering on $VAULT_ADDR"; }
printf 'VAULT_ADDR=%s\nVAULT_TOKEN=%s\n' "$VAULT_ADDR" "$VAULT_TOKEN" >"$dev/vault.env"

say "creating the demo account's keys"
keys="$dev/keys"
mkdir -p "$keys"
rm -f "$keys"/*
# create NAME FILE ARGS…: makes a key for the owner "demo"; FILE gets its curl header.
create() {
  local name=$1 file=$2; shift 2
  local out
  out=$(bin/keygate keys create --config "$dev/keygate.yaml" --owner demo --name "$name" --json "$@")
  printf 'Authorization: Bearer %s\n' "$(printf '%s' "$out" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')" >"$keys/$file"
  printf '%s' "$out" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p'
}
full_id=$(create "Demo App" full --scopes chat:completions,models:read --models 'gpt-4o-mini,mx4-atlas-*' --expires-in 30d)
create "Dashboard (read-only)" read-only --scopes models:read >/dev/null
create "Trial" trial --scopes models:read --plan demo-trial >/dev/null
create "Ops admin" admin --scopes admin >/dev/null
# A mistyped key: its checksum fails, so keygate refuses it without reading Vault.
sed 's/.$/x/; t; s/.$/y/' "$keys/full" >"$keys/typo"
if cmp -s "$keys/full" "$keys/typo"; then sed -i 's/.$/y/' "$keys/typo"; fi

# curl reads the demo client's certificate from this file, and keys from header files.
cat >"$dev/curl.conf" <<CURL
# the demo client: trusts the dev CA, presents its client certificate
cacert = "$tls/ca.pem"
cert = "$tls/client.pem"
key = "$tls/client-key.pem"
silent
show-error
write-out = "\\nHTTP %{http_code}\\n"
CURL
sed '/^cert\|^key/d' "$dev/curl.conf" >"$dev/curl-nocert.conf"

say "starting the echo upstream on 127.0.0.1:$echo_port and keygate (log: $dev/keygate.log)"
start bin/keygate-echo -addr "127.0.0.1:$echo_port"
start bin/keygate serve --config "$dev/keygate.yaml" \
  --terminate "127.0.0.1:$term_port" --upstream "http://127.0.0.1:$echo_port" >"$dev/keygate.log" 2>&1
keygate_pid=${pids[-1]}
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$keygate_pid" 2>/dev/null || { cat "$dev/keygate.log" >&2; die "keygate did not start"; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 || { cat "$dev/keygate.log" >&2; die "keygate is not ready"; }

url="https://127.0.0.1:$term_port"
c="curl -K $dev/curl.conf"
cat <<MSG

keygate $version: dev demo
  Vault dev server   $VAULT_ADDR             token in $dev/vault.env
  keygate ext_authz  127.0.0.1:$grpc_port (gRPC, mTLS)   health http://127.0.0.1:$http_port/readyz
  mTLS terminator    $url  ->  echo upstream http://127.0.0.1:$echo_port
  certificates       $tls/   (ca.pem, keygate.pem, envoy.pem, envoy-to-keygate.pem, client.pem)
  demo keys          $keys/  (curl header files; owner "demo")
                       full        chat:completions,models:read; models gpt-4o-mini, mx4-atlas-*
                       read-only   models:read
                       trial       models:read, plan demo-trial (2 requests/minute)
                       admin       admin
  curl settings      $dev/curl.conf (the CA, the client certificate)
  usage analytics    $usage_where, flushed every 2s
  operator console   http://127.0.0.1:$admin_port/console/  (sign in with the key in $keys/admin, after "Bearer ")

Try it from another terminal, in $(pwd):

# allowed: the echo shows x-api-key-id/-name/-scopes, x-request-id and x-forwarded-client-cert, no Authorization
  $c -H @$keys/full $url/v1/models
# allowed: a model on the key's list
  $c -H @$keys/full -d '{"model":"gpt-4o-mini"}' $url/v1/chat/completions
# missing key: 401 AUTH_MISSING
  $c $url/v1/models
# bad key (one character off): 401 AUTH_KEY_INVALID, decided without Vault
  $c -H @$keys/typo $url/v1/models
# insufficient scope: the read-only key cannot chat: 403 AUTH_INSUFFICIENT_SCOPE
  $c -H @$keys/read-only -d '{"model":"gpt-4o-mini"}' $url/v1/chat/completions
# model not allowed: 403 AUTH_MODEL_NOT_ALLOWED
  $c -H @$keys/full -d '{"model":"gpt-4o"}' $url/v1/chat/completions
# rate limited: the trial plan allows 2 a minute, the third gets 429 RATE_LIMITED
  for i in 1 2 3; do $c -o /dev/null -w 'HTTP %{http_code}\n' -H @$keys/trial $url/v1/models; done
# no client certificate: the TLS handshake is refused (curl fails: HTTP 000)
  curl -K $dev/curl-nocert.conf -H @$keys/full $url/v1/models

Manage keys:
  set -a; . $dev/vault.env; set +a
  bin/keygate keys list --config $dev/keygate.yaml
  bin/keygate keys revoke $full_id --config $dev/keygate.yaml
  curl -s -H @$keys/admin http://127.0.0.1:$admin_port/api-keys
# usage: the full key's checks by outcome, today (counts appear within 2s)
  curl -s -H @$keys/admin 'http://127.0.0.1:$admin_port/api-keys/$full_id/usage?by=outcome'
Put Envoy in front instead: envoy/configs/sidecar-mtls.yaml, with the files of docs/envoy.md.

Ctrl-C stops keygate, the echo server$([ "$usage" = postgres ] && echo ", PostgreSQL") and Vault.
MSG

# Wait for keygate; Ctrl-C (or a stopped keygate) ends the demo.
wait "$keygate_pid" || true
