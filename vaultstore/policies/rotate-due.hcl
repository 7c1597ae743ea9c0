# Vault policy for the "keygate keys rotate-due" job: keys.hcl, plus writing each new
# key into the applications' own paths (here secret/apps/<owner>/<name>, as in
# --deliver vault:secret/apps/{owner}/{name}#api_key).
path "secret/data/keygate/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/keygate/ids" {
  capabilities = ["list"]
}

path "secret/metadata/keygate/ids/*" {
  capabilities = ["delete"]
}

# The owner index: list one owner's keys; undo the entry of a key whose record could not
# be written.
path "secret/metadata/keygate/owners/*" {
  capabilities = ["list", "delete"]
}

path "secret/data/apps/*" {
  capabilities = ["create", "read", "update"]
}
