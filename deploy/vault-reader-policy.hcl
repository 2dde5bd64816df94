# What a service token needs with delivery = "reader": read the current
# values of one environment, nothing else. Replace secret/ (the mount) and
# raqeem/production (the prefix) with the environment's own, then:
#   bao policy write raqeem-production-reader deploy/vault-reader-policy.hcl
#   bao token create -policy=raqeem-production-reader -period=768h -field=token > secrets/production.vault-token
#   chmod 600 secrets/production.vault-token
path "secret/data/raqeem/production/*" {
  capabilities = ["read"]
}
