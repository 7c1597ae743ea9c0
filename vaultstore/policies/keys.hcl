# Vault policy for managing keys: the "keygate keys" commands, and "keygate serve" when
# its admin API is on (give serve this policy and serve.hcl).
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

# The owner index: list one owner's keys; undo the entry of a key whose record could not
# be written.
path "secret/metadata/keygate/owners/*" {
  capabilities = ["list", "delete"]
}
