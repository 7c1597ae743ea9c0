# Vault policy for "keygate serve" without the admin API: read key records by hash, read
# the change feed (revocations), and record when keys were last used. Nothing else.
# Assumes the KV v2 mount "secret" and base path "keygate"; change both to match.
path "secret/data/keygate/records/*" {
  capabilities = ["read"]
}

path "secret/data/keygate/changes" {
  capabilities = ["read"]
}

path "secret/data/keygate/usage/*" {
  capabilities = ["create", "read", "update"]
}
