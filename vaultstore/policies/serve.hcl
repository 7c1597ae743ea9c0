# Vault policy for "keygate serve": read key records by hash, nothing else.
# Assumes the KV v2 mount "secret" and base path "keygate"; change both to match.
path "secret/data/keygate/records/*" {
  capabilities = ["read"]
}
