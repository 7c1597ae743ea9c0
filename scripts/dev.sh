#!/usr/bin/env bash
# Local dev setup: a Vault dev server, a demo key, and keygate serving ext_authz.
# Everything listens on loopback; state lives in .dev/ (git-ignored). Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

vault_port=${KEYGATE_DEV_VAULT_PORT:-8200}
grpc_addr=${KEYGATE_DEV_GRPC_ADDR:-127.0.0.1:9001}
http_addr=${KEYGATE_DEV_HTTP_ADDR:-127.0.0.1:9002}

vault_bin=$(scripts/vault-build.sh)
mkdir -p .dev bin
echo "dev: building keygate" >&2
go build -o bin/keygate ./cmd/keygate

token="dev-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export VAULT_ADDR="http://127.0.0.1:$vault_port" VAULT_TOKEN="$token"
echo "dev: starting Vault dev server on $VAULT_ADDR (log: .dev/vault.log)" >&2
"$vault_bin" server -dev -dev-listen-address "127.0.0.1:$vault_port" \
  -dev-root-token-id "$token" -dev-no-store-token >.dev/vault.log 2>&1 &
vault_pid=$!
trap 'kill $vault_pid 2>/dev/null; wait $vault_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fsS "$VAULT_ADDR/v1/sys/health" >/dev/null 2>&1 && break
  kill -0 $vault_pid 2>/dev/null || { cat .dev/vault.log >&2; echo "dev: Vault did not start" >&2; exit 1; }
  sleep 0.1
done
printf 'VAULT_ADDR=%s\nVAULT_TOKEN=%s\n' "$VAULT_ADDR" "$VAULT_TOKEN" >.dev/vault.env

created=$(bin/keygate keys create --config scripts/dev.yaml --name "Demo App" --owner demo \
  --scopes chat:completions,models:read --expires-in 30d --json)
key=$(printf '%s' "$created" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
id=$(printf '%s' "$created" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
typo="${key%?}x"; [ "$typo" != "$key" ] || typo="${key%?}y"
admin_key=$(bin/keygate keys create --config scripts/dev.yaml --name "Dev Admin" --owner ops \
  --scopes admin --json | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')

cat <<MSG

keygate dev setup
  Vault dev server  $VAULT_ADDR   (token and address in .dev/vault.env)
  ext_authz gRPC    $grpc_addr
  health            http://$http_addr/healthz  and  /readyz
  demo key          $id  (shown once, here):

      $key

Try it from another terminal (each sends a CheckRequest as Envoy would):
  bin/keygate check --addr $grpc_addr -H "Authorization: Bearer $key"
  bin/keygate check --addr $grpc_addr -H "X-API-Key: $key"
  bin/keygate check --addr $grpc_addr                                   # no key: 401
  bin/keygate check --addr $grpc_addr -H "Authorization: Bearer $typo"   # typo: 401, no Vault read
Admin API on http://127.0.0.1:9003 (admin key, shown once: $admin_key):
  curl -s -H "Authorization: Bearer $admin_key" http://127.0.0.1:9003/api-keys
  curl -s -H "Authorization: Bearer $admin_key" -X POST http://127.0.0.1:9003/api-keys -d '{"name":"Staging","owner":"demo"}'
Manage keys (source .dev/vault.env first):
  set -a; . .dev/vault.env; set +a
  bin/keygate keys list --config scripts/dev.yaml
  bin/keygate keys rotate $id --grace 1h --config scripts/dev.yaml
  bin/keygate keys revoke $id --config scripts/dev.yaml
Put Envoy in front with envoy/configs/sidecar.yaml.

Ctrl-C stops keygate and Vault.
MSG

bin/keygate serve --config scripts/dev.yaml --grpc-addr "$grpc_addr" --http-addr "$http_addr"
