"""Read a service's secrets the same way everywhere, without ever showing them.

The Python twin of the Rust ``secrets-reader`` crate and the TypeScript
package beside it; ``readers/conformance/`` holds the cases all three run::

    from secrets_reader import get_secrets_manager, SecretKey

    secrets = get_secrets_manager()
    db_password = secrets.get(SecretKey.POSTGRES_PASSWORD).expose_str()
    db_url = secrets.get_database_url().expose_str()
    redis_url = secrets.get_redis_url().expose_str()

``get`` looks in ``/run/secrets/<name>`` (``$SECRETS_DIR``), then the file
named by ``$<NAME>_FILE``, then ``$<NAME>``, then Vault KV v2 and AWS Secrets
Manager when configured (``$SECRETS_ORDER``, default ``files,env,vault,aws``).
Values are :class:`Secret` objects whose ``str``/``repr`` print
``<redacted>``; :class:`SecretError` never holds a value.
"""

from ._reader import (
    DEFAULT_CACHE_SECONDS,
    DEFAULT_DIR,
    MAX_SECRET_LEN,
    RemoteCache,
    Secret,
    SecretError,
    SecretKey,
    SecretsManager,
    env_var_name,
    get_database_url,
    get_redis_url,
    get_secret,
    get_secrets_manager,
    percent_encode,
    profile_keys,
)
from ._sigv4 import Signed, amz_date, sign

__all__ = [
    "DEFAULT_CACHE_SECONDS",
    "DEFAULT_DIR",
    "MAX_SECRET_LEN",
    "RemoteCache",
    "Secret",
    "SecretError",
    "SecretKey",
    "SecretsManager",
    "Signed",
    "amz_date",
    "env_var_name",
    "get_database_url",
    "get_redis_url",
    "get_secret",
    "get_secrets_manager",
    "percent_encode",
    "profile_keys",
    "sign",
]
