//! The `vault` and `aws` providers against real servers this test starts on
//! free loopback ports and kills on drop: an OpenBao dev server (`bao`) and
//! moto (`moto_server`). Values are written with the `bao` and `aws` CLIs
//! (on stdin, never argv) and read back through [`Reader`]; a rotation is
//! seen only after the cache time (8 or 10 s here, well above a CLI write under load); no error shows a value, a token
//! or a secret key. The TypeScript and Python readers (`readers/`) read the
//! same servers under the `reader` delivery's variables and credential files,
//! with the same bytes as this crate, and see a rotation after the cache time.
//!
//! Built only with both features (`required-features` in Cargo.toml):
//! `cargo test -p secrets-reader --all-features`. Without the programs the
//! tests fail under `CI=true` and are skipped loudly elsewhere
//! (`bash .ci/openbao.sh` and `bash .ci/moto.sh` install them).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secrets_reader::{Error, Reader, Secret, Source};

const TOKEN: &str = "reader-test-root-T0KEN-qq";
const AWS_SECRET_KEY: &str = "aws-secret-K3Y-zz";
/// Distinctive values that must never appear in any error.
const V1: &str = "first-V4LUE-xyzzy";
const V2: &str = "second-V4LUE-plugh";

/// The readers' live test (node, python, tsc and both servers) takes this
/// for writing and runs alone; the other tests take it for reading and run
/// together as before, so its load does not stretch their timed rotations.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when every program is on PATH; else fails under CI, skips loudly.
fn have(test: &str, programs: &[&str], install: &str) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| which(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if ci() {
        panic!(
            "{test}: CI is set but {} is not installed; .ci/run must run {install}",
            missing.join(" and ")
        );
    }
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {test}: {} not installed ({install}) ***\n",
            missing.join(" and ")
        );
    };
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A unique directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "secrets-reader-providers-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills and reaps the child on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(mut cmd: Command, stdin: &str) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- OpenBao ----

fn start_bao() -> Server {
    for _ in 0..20 {
        let port = free_port();
        // The dev server also takes PORT+1 (cluster address).
        if TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
            continue;
        }
        let child = Command::new("bao")
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao server -dev");
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = server.child.try_wait() {
                break; // lost the port race: try another port
            }
            if bao(&server)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("the OpenBao dev server did not start");
}

/// The `bao` CLI against `server` (BAO_* too: an empty BAO_* would win).
fn bao(server: &Server) -> Command {
    let mut c = Command::new("bao");
    c.env("BAO_ADDR", &server.url)
        .env("BAO_TOKEN", TOKEN)
        .env("VAULT_ADDR", &server.url)
        .env("VAULT_TOKEN", TOKEN)
        .env_remove("BAO_NAMESPACE")
        .env_remove("VAULT_NAMESPACE");
    c
}

/// `kv put -mount=secret PATH KEY=-` with the value on stdin, as xtask does.
fn kv_put(server: &Server, path: &str, key: &str, value: &str) {
    let mut c = bao(server);
    c.args(["kv", "put", "-mount=secret", path, &format!("{key}=-")]);
    run(c, value);
}

// ---- moto ----

fn start_moto() -> Server {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto_server did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// `aws secretsmanager ARGS` against `server`, isolated from any real set-up.
fn aws(server: &Server, dir: &Path, args: &[&str], stdin: &str) {
    let mut c = Command::new("aws");
    c.arg("secretsmanager")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &server.url)
        .env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION");
    run(c, stdin);
}

// ---- the reader ----

fn reader(dir: &Path, vars: &[(&str, &str)]) -> Reader {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    Reader::new(dir).with_env(move |k| map.get(k).cloned())
}

fn vault_env(server: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("VAULT_ADDR", server.url.clone()),
        ("VAULT_TOKEN", TOKEN.to_owned()),
        ("SECRETS_VAULT_PREFIX", "raqeem/test".to_owned()),
        ("SECRETS_CACHE_SECONDS", "1".to_owned()),
    ]
}

fn aws_env(server: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", server.url.clone()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY.to_owned()),
        ("SECRETS_AWS_PREFIX", "raqeem/test".to_owned()),
        ("SECRETS_CACHE_SECONDS", "1".to_owned()),
    ]
}

/// `base` with `extra` set on top (an empty value unsets, as the reader
/// treats empty variables as unset).
fn with(base: &[(&'static str, String)], extra: &[(&'static str, &str)]) -> Vec<(String, String)> {
    let mut map: Vec<(String, String)> = base
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    for (k, v) in extra {
        map.retain(|(m, _)| m != k);
        map.push((k.to_string(), v.to_string()));
    }
    map
}

fn reader_with(dir: &Path, vars: &[(String, String)]) -> Reader {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (&**k, &**v)).collect();
    reader(dir, &vars)
}

fn text(s: &Secret) -> &str {
    s.expose_str().unwrap()
}

/// No form of `err` shows a value, a token or the secret key.
fn assert_clean(err: &Error) {
    for out in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
        for bad in [V1, V2, "V4LUE", TOKEN, "T0KEN", AWS_SECRET_KEY, "K3Y"] {
            assert!(!out.contains(bad), "{bad:?} leaked: {out}");
        }
    }
}

/// Waits until `secs` have passed since `filled`, plus a margin.
fn wait_cache(filled: Instant, secs: u64) {
    let until = filled + Duration::from_millis(secs * 1000 + 300);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
}

#[test]
fn vault_kv2_read_rotate_and_errors() {
    let _shared = ALONE.read().unwrap_or_else(|e| e.into_inner());
    if !have(
        "vault_kv2_read_rotate_and_errors",
        &["bao"],
        "bash .ci/openbao.sh",
    ) {
        return;
    }
    let server = start_bao();
    let dir = TempDir::new();
    kv_put(&server, "raqeem/test/jwt_secret", "jwt_secret", V1);
    let env = vault_env(&server);
    let r = reader_with(&dir.0, &with(&env, &[]));

    // Found, with its source named.
    let s = r.get("jwt_secret").unwrap();
    assert_eq!(text(&s), V1);
    assert_eq!(
        s.source(),
        &Source::Vault {
            addr: server.url.clone(),
            path: "secret/data/raqeem/test/jwt_secret".into()
        }
    );
    assert_eq!(
        s.source().to_string(),
        format!("vault secret/data/raqeem/test/jwt_secret at {}", server.url)
    );
    let shown = format!("{s:?} {s}");
    assert!(!shown.contains(V1), "{shown}");

    // Rotation: the cached value until the cache time has passed. A `bao`
    // call takes 0.2 s on an idle machine and seconds under a parallel build,
    // so this reader caches for 8 s, filled just before the write.
    let r8 = reader_with(&dir.0, &with(&env, &[("SECRETS_CACHE_SECONDS", "8")]));
    let filling = Instant::now();
    assert_eq!(text(&r8.get("jwt_secret").unwrap()), V1);
    // The cache holds from some point between `filling` and `filled`.
    let filled = Instant::now();
    kv_put(&server, "raqeem/test/jwt_secret", "jwt_secret", V2);
    assert_eq!(
        text(&r8.get("jwt_secret").unwrap()),
        V1,
        "served from cache"
    );
    assert!(
        filling.elapsed() < Duration::from_secs(8),
        "the write took longer than the cache time; the check above proved nothing"
    );
    wait_cache(filled, 8);
    assert_eq!(
        text(&r8.get("jwt_secret").unwrap()),
        V2,
        "re-read after 8 s"
    );
    // Cache off: every read goes to the server.
    let r0 = reader_with(&dir.0, &with(&env, &[("SECRETS_CACHE_SECONDS", "0")]));
    assert_eq!(text(&r0.get("jwt_secret").unwrap()), V2);
    kv_put(&server, "raqeem/test/jwt_secret", "jwt_secret", V1);
    assert_eq!(text(&r0.get("jwt_secret").unwrap()), V1);

    // Default order: files and env come first; SECRETS_ORDER changes that.
    let r2 = reader_with(&dir.0, &with(&env, &[("JWT_SECRET", "from-env")]));
    assert_eq!(text(&r2.get("jwt_secret").unwrap()), "from-env");
    let r2 = reader_with(
        &dir.0,
        &with(
            &env,
            &[("JWT_SECRET", "from-env"), ("SECRETS_ORDER", "vault,env")],
        ),
    );
    assert_eq!(text(&r2.get("jwt_secret").unwrap()), V1);
    let r2 = reader_with(
        &dir.0,
        &with(&env, &[("JWT_SECRET", ""), ("SECRETS_ORDER", "files,env")]),
    );
    assert!(matches!(r2.get("jwt_secret"), Err(Error::NotFound { .. })));

    // Token from a file, custom mount (a second KV v2 mount).
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut c = bao(&server);
    c.args(["secrets", "enable", "-path=kv2", "-version=2", "kv"]);
    run(c, "");
    let mut c = bao(&server);
    c.args(["kv", "put", "-mount=kv2", "other/api_key", "api_key=-"]);
    run(c, V2);
    let r3 = reader_with(
        &dir.0,
        &with(
            &env,
            &[
                ("VAULT_TOKEN", ""),
                ("VAULT_TOKEN_FILE", token_file.to_str().unwrap()),
                ("SECRETS_VAULT_MOUNT", "kv2"),
                ("SECRETS_VAULT_PREFIX", "other"),
            ],
        ),
    );
    let s = r3.get("api_key").unwrap();
    assert_eq!(text(&s), V2);
    assert!(
        s.source()
            .to_string()
            .starts_with("vault kv2/data/other/api_key at ")
    );

    // Built URLs take their parts from Vault too.
    kv_put(
        &server,
        "raqeem/test/redis_password",
        "redis_password",
        "pw",
    );
    assert_eq!(
        text(&r.redis_url().unwrap()),
        "redis://:pw@redis:6379/0",
        "redis_url built from Vault"
    );

    let mut errors = Vec::new();
    // Not found: every place is named, Vault's path too.
    let err = r.get("missing").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "secret \"missing\" not found; looked at {}, $MISSING_FILE, $MISSING, \
             vault secret/data/raqeem/test/missing at {}",
            dir.0.join("missing").display(),
            server.url
        )
    );
    errors.push(err);

    // A wrong token: the provider and path are named, the token is not.
    let bad = reader_with(&dir.0, &with(&env, &[("VAULT_TOKEN", "wrong-T0KEN-x")]));
    let err = bad.get("jwt_secret").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Provider { .. }), "{err:?}");
    assert!(
        msg.starts_with(&format!(
            "cannot read secret \"jwt_secret\" from vault secret/data/raqeem/test/jwt_secret at {}: HTTP 403",
            server.url
        )),
        "{msg}"
    );
    assert!(!msg.contains("wrong-T0KEN"), "{msg}");
    errors.push(err);

    // An entry without a key named like the secret.
    kv_put(&server, "raqeem/test/oddly", "other_key", V1);
    let err = r.get("oddly").unwrap_err();
    assert!(
        err.to_string()
            .contains("has no key \"oddly\" (keys: other_key)"),
        "{err}"
    );
    errors.push(err);

    // Settings: vault named but not configured, no token, a bad order.
    let err = reader(&dir.0, &[("SECRETS_ORDER", "env,vault")])
        .get("x")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "$SECRETS_VAULT_PREFIX must be set when $SECRETS_ORDER names vault"
    );
    errors.push(err);
    let err = reader_with(&dir.0, &with(&env, &[("VAULT_TOKEN", "")]))
        .get("jwt_secret")
        .unwrap_err();
    assert!(err.to_string().contains("no token"), "{err}");
    errors.push(err);
    let err = reader_with(
        &dir.0,
        &with(&env, &[("VAULT_TOKEN_FILE", token_file.to_str().unwrap())]),
    )
    .get("jwt_secret")
    .unwrap_err();
    assert!(err.to_string().contains("both set"), "{err}");
    errors.push(err);
    let err = reader_with(&dir.0, &with(&env, &[("SECRETS_ORDER", "files,nope")]))
        .get("jwt_secret")
        .unwrap_err();
    assert!(matches!(err, Error::InvalidVar { .. }), "{err:?}");
    errors.push(err);
    // Unreachable server.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let err = reader_with(&dir.0, &with(&env, &[("VAULT_ADDR", &closed)]))
        .get("jwt_secret")
        .unwrap_err();
    assert!(err.to_string().contains("request failed"), "{err}");
    errors.push(err);
    for err in &errors {
        assert_clean(err);
    }
}

#[test]
fn aws_secrets_manager_read_rotate_and_errors() {
    let _shared = ALONE.read().unwrap_or_else(|e| e.into_inner());
    if !have(
        "aws_secrets_manager_read_rotate_and_errors",
        &["moto_server", "aws"],
        "bash .ci/moto.sh",
    ) {
        return;
    }
    let server = start_moto();
    let dir = TempDir::new();
    let d = &dir.0;
    aws(
        &server,
        d,
        &[
            "create-secret",
            "--name",
            "raqeem/test/jwt_secret",
            "--secret-string",
            "file:///dev/stdin",
        ],
        V1,
    );
    aws(
        &server,
        d,
        &[
            "create-secret",
            "--name",
            "raqeem/test/tls_key",
            "--secret-binary",
            "fileb:///dev/stdin",
        ],
        "bin\u{1}ary\n",
    );
    let env = aws_env(&server);
    let r = reader_with(d, &with(&env, &[]));

    let s = r.get("jwt_secret").unwrap();
    assert_eq!(text(&s), V1);
    assert_eq!(
        s.source(),
        &Source::Aws {
            region: "us-east-1".into(),
            id: "raqeem/test/jwt_secret".into()
        }
    );
    assert_eq!(
        s.source().to_string(),
        "aws secretsmanager raqeem/test/jwt_secret in us-east-1"
    );
    // SecretBinary, decoded (and its trailing newline trimmed).
    assert_eq!(r.get("tls_key").unwrap().expose(), b"bin\x01ary");

    // Rotation through put-secret-value: seen after the cache time. One
    // `aws` call costs about 0.6-1.5 s, and several under a parallel build,
    // so this reader caches for 10 s, filled just before the write.
    let r = reader_with(d, &with(&env, &[("SECRETS_CACHE_SECONDS", "10")]));
    let filling = Instant::now();
    assert_eq!(text(&r.get("jwt_secret").unwrap()), V1);
    let filled = Instant::now();
    aws(
        &server,
        d,
        &[
            "put-secret-value",
            "--secret-id",
            "raqeem/test/jwt_secret",
            "--secret-string",
            "file:///dev/stdin",
        ],
        V2,
    );
    assert_eq!(text(&r.get("jwt_secret").unwrap()), V1, "served from cache");
    assert!(
        filling.elapsed() < Duration::from_secs(10),
        "the write took longer than the cache time; the check above proved nothing"
    );
    wait_cache(filled, 10);
    assert_eq!(
        text(&r.get("jwt_secret").unwrap()),
        V2,
        "re-read after 10 s"
    );

    // Credentials from a shared credentials file and a named profile.
    let creds = d.join("credentials");
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id=x\n\n[ci]\naws_access_key_id = testing\naws_secret_access_key = {AWS_SECRET_KEY}\n"),
    )
    .unwrap();
    let rf = reader_with(
        d,
        &with(
            &env,
            &[
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
                ("AWS_PROFILE", "ci"),
                ("AWS_REGION", ""),
                ("AWS_DEFAULT_REGION", "us-east-1"),
            ],
        ),
    );
    assert_eq!(text(&rf.get("jwt_secret").unwrap()), V2);

    let mut errors = Vec::new();
    let err = r.get("missing").unwrap_err();
    assert!(
        err.to_string()
            .ends_with("$MISSING, aws secretsmanager raqeem/test/missing in us-east-1"),
        "{err}"
    );
    errors.push(err);
    // The default profile of that file has no secret key.
    let err = reader_with(
        d,
        &with(
            &env,
            &[
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ],
        ),
    )
    .get("jwt_secret")
    .unwrap_err();
    assert!(err.to_string().contains("profile [default]"), "{err}");
    errors.push(err);
    let err = reader_with(
        d,
        &with(
            &env,
            &[
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                (
                    "AWS_SHARED_CREDENTIALS_FILE",
                    d.join("none").to_str().unwrap(),
                ),
            ],
        ),
    )
    .get("jwt_secret")
    .unwrap_err();
    assert!(err.to_string().contains("no credentials"), "{err}");
    errors.push(err);
    let err = reader_with(d, &with(&env, &[("AWS_REGION", "")]))
        .get("jwt_secret")
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidVar { var, .. } if var == "AWS_REGION"),
        "{err:?}"
    );
    errors.push(err);
    let err = reader(d, &[("SECRETS_ORDER", "aws")]).get("x").unwrap_err();
    assert_eq!(
        err.to_string(),
        "$SECRETS_AWS_PREFIX must be set when $SECRETS_ORDER names aws"
    );
    errors.push(err);
    let closed = format!("http://127.0.0.1:{}", free_port());
    let err = reader_with(d, &with(&env, &[("AWS_ENDPOINT_URL", &closed)]))
        .get("jwt_secret")
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "cannot read secret \"jwt_secret\" from aws secretsmanager raqeem/test/jwt_secret in us-east-1: request failed"
        ),
        "{err}"
    );
    errors.push(err);
    for err in &errors {
        assert_clean(err);
    }
}

#[test]
fn order_across_vault_and_aws() {
    let _shared = ALONE.read().unwrap_or_else(|e| e.into_inner());
    if !have(
        "order_across_vault_and_aws",
        &["bao"],
        "bash .ci/openbao.sh",
    ) || !have(
        "order_across_vault_and_aws",
        &["moto_server", "aws"],
        "bash .ci/moto.sh",
    ) {
        return;
    }
    let (bao_server, moto) = std::thread::scope(|s| {
        let b = s.spawn(start_bao);
        let m = s.spawn(start_moto);
        (b.join().unwrap(), m.join().unwrap())
    });
    let dir = TempDir::new();
    kv_put(&bao_server, "raqeem/test/api_key", "api_key", "in-vault");
    aws(
        &moto,
        &dir.0,
        &[
            "create-secret",
            "--name",
            "raqeem/test/api_key",
            "--secret-string",
            "file:///dev/stdin",
        ],
        "in-aws",
    );
    aws(
        &moto,
        &dir.0,
        &[
            "create-secret",
            "--name",
            "raqeem/test/only_aws",
            "--secret-string",
            "file:///dev/stdin",
        ],
        "aws-only",
    );
    let mut env = vault_env(&bao_server);
    env.extend(aws_env(&moto));
    let get = |order: &str, name: &str| {
        let r = reader_with(&dir.0, &with(&env, &[("SECRETS_ORDER", order)]));
        r.get(name).map(|s| text(&s).to_owned())
    };
    // Default order: vault before aws.
    assert_eq!(get("", "api_key").unwrap(), "in-vault");
    assert_eq!(get("aws,vault", "api_key").unwrap(), "in-aws");
    assert_eq!(get(" files , env , aws ", "api_key").unwrap(), "in-aws");
    assert_eq!(get("vault,aws", "only_aws").unwrap(), "aws-only");
    assert!(matches!(
        get("vault", "only_aws"),
        Err(Error::NotFound { .. })
    ));
    let err = get("vault,vault", "api_key").unwrap_err();
    assert_eq!(err.to_string(), "$SECRETS_ORDER names a provider twice");
    // A file still wins in the default order.
    std::fs::write(dir.0.join("api_key"), "in-file\n").unwrap();
    assert_eq!(get("", "api_key").unwrap(), "in-file");
    assert_eq!(get("vault,files", "api_key").unwrap(), "in-vault");
}

// ---- the TypeScript and Python readers against the same servers ----

/// For each line on stdin, reads the names given and prints their bytes as
/// hex on one line, through one reader (so with its cache).
const NODE_SCRIPT: &str = r#"
const { SecretReader } = await import(process.argv[1]);
const { createInterface } = await import("node:readline");
const names = process.argv.slice(2);
const r = new SecretReader();
const read = async () => {
  const out = [];
  for (const n of names) {
    const s = n === "database_url" ? await r.databaseUrl() : n === "redis_url" ? await r.redisUrl() : await r.get(n);
    out.push(s.expose().toString("hex"));
  }
  return out.join(" ");
};
for await (const _ of createInterface({ input: process.stdin })) console.log(await read());
"#;

const PYTHON_SCRIPT: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
from secrets_reader import get_secrets_manager
m = get_secrets_manager()
def read():
    out = []
    for n in sys.argv[2:]:
        s = m.get_database_url() if n == "database_url" else m.get_redis_url() if n == "redis_url" else m.get(n)
        out.append(s.expose().hex())
    return " ".join(out)
for _ in sys.stdin:
    print(read(), flush=True)
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The delivery's contract, as the `reader` delivery sets it: the store's
/// variables and a credential file each (`VAULT_TOKEN_FILE`,
/// `AWS_SHARED_CREDENTIALS_FILE`), both stores at once here.
fn delivery_env(
    bao_server: &Server,
    moto: &Server,
    dir: &Path,
    cache_secs: u64,
) -> Vec<(String, String)> {
    let token = dir.join("vault_token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let creds = dir.join("aws_credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = testing\naws_secret_access_key = {AWS_SECRET_KEY}\n"
        ),
    )
    .unwrap();
    let secrets = dir.join("empty-secrets-dir");
    std::fs::create_dir_all(&secrets).unwrap();
    [
        ("SECRETS_DIR", secrets.display().to_string()),
        ("VAULT_ADDR", bao_server.url.clone()),
        ("VAULT_TOKEN_FILE", token.display().to_string()),
        ("SECRETS_VAULT_MOUNT", "secret".to_owned()),
        ("SECRETS_VAULT_PREFIX", "raqeem/live".to_owned()),
        ("SECRETS_AWS_PREFIX", "raqeem/live".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url.clone()),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
        ("SECRETS_CACHE_SECONDS", cache_secs.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Every secret, read by the Rust reader with `env`, as the scripts print it.
fn rust_line(dir: &Path, env: &[(String, String)], names: &[&str]) -> String {
    let r = reader_with(dir, env);
    names
        .iter()
        .map(|n| {
            let s = match *n {
                "database_url" => r.database_url(),
                "redis_url" => r.redis_url(),
                n => r.get(n),
            };
            hex(s.unwrap().expose())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `bao` and an `aws` call (about 0.1 and 0.6-1.5 s) fit well within it,
/// even on a loaded machine.
const CACHE_SECS: u64 = 8;

#[test]
fn typescript_and_python_readers_against_openbao_and_moto() {
    const TEST: &str = "typescript_and_python_readers_against_openbao_and_moto";
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    let tsc =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../readers/typescript/node_modules/.bin/tsc");
    if !have(TEST, &["bao"], "bash .ci/openbao.sh")
        || !have(TEST, &["moto_server", "aws"], "bash .ci/moto.sh")
        || !have(TEST, &["node", "python3"], "apt-get install nodejs python3")
    {
        return;
    }
    if !tsc.is_file() {
        assert!(
            !ci(),
            "{TEST}: CI is set but readers/typescript has no TypeScript compiler: .ci/run must run npm ci there"
        );
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {TEST}: the TypeScript compiler is not installed (run `npm ci` in readers/typescript) ***\n"
        );
        return;
    }
    let (bao_server, moto) = std::thread::scope(|s| {
        let b = s.spawn(start_bao);
        let m = s.spawn(start_moto);
        (b.join().unwrap(), m.join().unwrap())
    });
    let dir = TempDir::new();
    let d = &dir.0;
    // The TypeScript reader, compiled apart from readers/typescript/dist.
    let out = d.join("ts");
    let status = Command::new(&tsc)
        .args(["-p", "../readers/typescript", "--outDir"])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "tsc failed");
    let ts_module = out.join("src/index.js");
    let py_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../readers/python");

    // Values with bytes that need care: percent-encoding, a newline inside,
    // UTF-8, and the trailing newline that is trimmed.
    let p1 = "p@ss/w:rd?#% é\nline2";
    kv_put(
        &bao_server,
        "raqeem/live/jwt_secret",
        "jwt_secret",
        &format!("{V1}\n"),
    );
    kv_put(
        &bao_server,
        "raqeem/live/postgres_user",
        "postgres_user",
        "app user",
    );
    kv_put(
        &bao_server,
        "raqeem/live/postgres_password",
        "postgres_password",
        p1,
    );
    let create = |name: &str, value: &str| {
        aws(
            &moto,
            d,
            &[
                "create-secret",
                "--name",
                name,
                "--secret-string",
                "file:///dev/stdin",
            ],
            value,
        )
    };
    create("raqeem/live/api_key", "aws-V4LUE-one");
    create("raqeem/live/redis_password", "r p@ss");
    let names = ["jwt_secret", "api_key", "database_url", "redis_url"];

    for (lang, mut cmd) in [
        ("typescript", {
            let mut c = Command::new("node");
            c.args(["--input-type=module", "-e", NODE_SCRIPT])
                .arg(&ts_module)
                .args(names);
            c
        }),
        ("python", {
            let mut c = Command::new("python3");
            c.args(["-c", PYTHON_SCRIPT])
                .arg(&py_path)
                .args(names)
                .env("PYTHONDONTWRITEBYTECODE", "1");
            c
        }),
    ] {
        // Fresh values for each language, so each sees its own rotation.
        kv_put(
            &bao_server,
            "raqeem/live/jwt_secret",
            "jwt_secret",
            &format!("{V1}\n"),
        );
        aws(
            &moto,
            d,
            &[
                "put-secret-value",
                "--secret-id",
                "raqeem/live/api_key",
                "--secret-string",
                "file:///dev/stdin",
            ],
            "aws-V4LUE-one",
        );
        let env = delivery_env(&bao_server, &moto, d, CACHE_SECS);
        let before = rust_line(d, &env, &names);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_")
                || k.starts_with("VAULT_")
                || k.starts_with("SECRETS_")
                || k.starts_with("BAO_")
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let mut read = || {
            writeln!(stdin, "read").unwrap();
            lines.next().expect("a line from the script").unwrap()
        };
        // The script's cache is filled between these two instants.
        let asked = Instant::now();
        assert_eq!(read(), before, "{lang}: the same bytes as the Rust reader");
        let filled = Instant::now();
        // Rotate in both stores, then ask again: still the cached values.
        kv_put(&bao_server, "raqeem/live/jwt_secret", "jwt_secret", V2);
        aws(
            &moto,
            d,
            &[
                "put-secret-value",
                "--secret-id",
                "raqeem/live/api_key",
                "--secret-string",
                "file:///dev/stdin",
            ],
            "aws-V4LUE-two",
        );
        let second = read();
        assert!(
            asked.elapsed() < Duration::from_secs(CACHE_SECS),
            "{lang}: the rotation took longer than the cache time; the check proves nothing"
        );
        assert_eq!(second, before, "{lang}: served from the cache");
        wait_cache(filled, CACHE_SECS);
        let third = read();
        let after = rust_line(d, &env, &names);
        assert_ne!(after, before);
        assert_eq!(
            third, after,
            "{lang}: the rotated values after the cache time"
        );
        assert!(third.starts_with(&hex(V2.as_bytes())), "{lang}: {third}");
        drop(stdin);
        assert!(child.wait().unwrap().success(), "{lang}: the script failed");
        let _ = writeln!(
            std::io::stderr(),
            "{lang} reader: OpenBao and moto, {} secrets byte for byte, rotation seen after the cache time",
            names.len()
        );
    }
}
