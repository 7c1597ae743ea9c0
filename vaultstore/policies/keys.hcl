# Vault policy for "keygate keys" (create, list, show, revoke).
# Assumes the KV v2 mount "secret" and base path "keygate"; change both to match.
path "secret/data/keygate/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/keygate/ids" {
  capabilities = ["list"]
}

# Undo the id of a key whose record could not be written.
path "secret/metadata/keygate/ids/*" {
  capabilities = ["delete"]
}
