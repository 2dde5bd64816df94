# What the operator's token needs for setup-secrets, list-secrets,
# verify-secrets, rotate-secrets, remove-secrets and deploy on one
# environment (KV v2). Replace secret/ (the mount) and raqeem/production
# (the prefix) with the environment's own, then:
#   bao policy write raqeem-production-operator deploy/vault-policy.hcl
# Values: kv put (check-and-set) creates and updates, deploy with
# delivery = "fetch" reads.
path "secret/data/raqeem/production/*" {
  capabilities = ["create", "read", "update"]
}
# Metadata: list the prefix, read versions and fingerprints, patch the
# custom metadata after each write, delete every version on removal.
path "secret/metadata/raqeem/production" {
  capabilities = ["list"]
}
path "secret/metadata/raqeem/production/*" {
  capabilities = ["read", "list", "patch", "update", "delete"]
}
