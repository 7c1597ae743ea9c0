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
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}

say() { echo "dev: $*" >&2; }
die() { say "$*"; exit 1; }

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

pids=()
stop() {
  trap - INT TERM EXIT
  # Newest first: keygate, then the echo server, then Vault.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "$dev/pid" "$dev/vault.env"
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
export VAULT_TOKEN="$token"
for _ in $(seq 100); do
  curl -fsS "$VAULT_ADDR/v1/sys/health" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$dev/vault.log" >&2; die "Vault did not start"; }
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
Put Envoy in front instead: envoy/configs/sidecar-mtls.yaml, with the files of docs/envoy.md.

Ctrl-C stops keygate, the echo server and Vault.
MSG

# Wait for keygate; Ctrl-C (or a stopped keygate) ends the demo.
wait "$keygate_pid" || true
