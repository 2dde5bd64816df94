use super::*;
use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Distinctive value that must never appear in any output.
const VALUE: &str = "s3cr3t-V4LUE-xyzzy";

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "secrets-reader-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A reader over `dir` whose environment is exactly `vars`.
fn reader(dir: &TempDir, vars: &[(&str, &str)]) -> Reader {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    Reader::new(&dir.0).with_env(move |k| map.get(k).cloned())
}

fn assert_hidden(what: &dyn fmt::Debug, display: &dyn fmt::Display) {
    let debug = format!("{what:?}");
    let alt = format!("{what:#?}");
    let shown = display.to_string();
    for out in [&debug, &alt, &shown] {
        assert!(!out.contains(VALUE), "value leaked: {out}");
        assert!(!out.contains("V4LUE"), "part of value leaked: {out}");
    }
}

#[test]
fn dir_beats_file_env_beats_env() {
    let dir = TempDir::new();
    let other = TempDir::new();
    let file = other.write("pw", "from-file-env");
    let file = file.to_str().unwrap();

    // Only the plain variable.
    let r = reader(&dir, &[("DB_PASSWORD", "from-env")]);
    let s = r.get("db_password").unwrap();
    assert_eq!(s.expose(), b"from-env");
    assert_eq!(s.source(), &Source::Env("DB_PASSWORD".into()));
    assert_eq!(s.source().to_string(), "$DB_PASSWORD");

    // _FILE beats nothing else set.
    let r = reader(&dir, &[("DB_PASSWORD_FILE", file)]);
    let s = r.get("db_password").unwrap();
    assert_eq!(s.expose(), b"from-file-env");
    assert_eq!(
        s.source().to_string(),
        format!("$DB_PASSWORD_FILE ({file})")
    );

    // The directory beats _FILE.
    let in_dir = dir.write("db_password", "from-dir");
    let s = r.get("db_password").unwrap();
    assert_eq!(s.expose(), b"from-dir");
    assert_eq!(s.source(), &Source::Dir(in_dir.clone()));
    assert_eq!(s.source().to_string(), in_dir.display().to_string());

    // The directory beats the plain variable.
    let r = reader(&dir, &[("DB_PASSWORD", "from-env")]);
    assert_eq!(r.get("db_password").unwrap().expose(), b"from-dir");
}

#[test]
fn env_names_map_dash_and_dot() {
    assert_eq!(env_var_name("postgres_password"), "POSTGRES_PASSWORD");
    assert_eq!(env_var_name("my-api.key"), "MY_API_KEY");
    let dir = TempDir::new();
    let r = reader(&dir, &[("MY_API_KEY", "k")]);
    let s = r.get("my-api.key").unwrap();
    assert_eq!(s.expose_str().unwrap(), "k");
}

#[test]
fn conflict_is_checked_before_reading() {
    let dir = TempDir::new();
    // Even a file in the directory does not hide the conflict.
    dir.write("api_key", VALUE);
    let path = dir.write("elsewhere", VALUE);
    let r = reader(
        &dir,
        &[("API_KEY", VALUE), ("API_KEY_FILE", path.to_str().unwrap())],
    );
    let err = r.get("api_key").unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "secret \"api_key\": both $API_KEY and $API_KEY_FILE are set; set only one"
    );
    assert_hidden(&err, &err);
}

#[test]
fn empty_variable_counts_as_unset() {
    let dir = TempDir::new();
    let path = dir.write("elsewhere", "v");
    let r = reader(
        &dir,
        &[("API_KEY", ""), ("API_KEY_FILE", path.to_str().unwrap())],
    );
    assert_eq!(r.get("api_key").unwrap().expose(), b"v");

    let r = reader(&dir, &[("API_KEY", "v"), ("API_KEY_FILE", "")]);
    assert_eq!(r.get("api_key").unwrap().source().to_string(), "$API_KEY");

    assert_eq!(dir_from(Some(OsString::new())), Path::new(DEFAULT_DIR));
    assert_eq!(dir_from(None), Path::new(DEFAULT_DIR));
    assert_eq!(dir_from(Some("/s".into())), Path::new("/s"));
}

#[test]
fn trailing_newlines_are_trimmed_and_nothing_else() {
    let dir = TempDir::new();
    let cases: &[(&str, &str)] = &[
        ("plain", "plain"),
        ("lf\n", "lf"),
        ("crlf\r\n", "crlf"),
        ("many\n\n\r\n\n", "many"),
        ("inner\nline\n", "inner\nline"),
        ("trailing space \n", "trailing space "),
        ("  leading", "  leading"),
        ("tab\t", "tab\t"),
        ("lone-cr\r", "lone-cr\r"),
        ("cr-cr-lf\r\r\n", "cr-cr-lf\r"),
    ];
    for (i, (raw, want)) in cases.iter().enumerate() {
        let name = format!("s{i}");
        dir.write(&name, raw);
        let r = reader(&dir, &[]);
        assert_eq!(
            r.get(&name).unwrap().expose_str().unwrap(),
            *want,
            "{raw:?}"
        );
        // The same rule applies to variables.
        let r = reader(&dir, &[("ENVONLY", raw)]);
        assert_eq!(r.get("envonly").unwrap().expose(), want.as_bytes());
    }
}

#[test]
fn empty_values_name_their_source() {
    let dir = TempDir::new();
    let path = dir.write("empty_file", "\n\r\n");
    let r = reader(&dir, &[]);
    let err = r.get("empty_file").unwrap_err();
    assert!(matches!(err, Error::Empty { .. }));
    assert_eq!(
        err.to_string(),
        format!("secret \"empty_file\" from {} is empty", path.display())
    );

    let r = reader(&dir, &[("TOKEN", "\n")]);
    let err = r.get("token").unwrap_err();
    assert_eq!(err.to_string(), "secret \"token\" from $TOKEN is empty");

    let r = reader(&dir, &[("TOKEN_FILE", path.to_str().unwrap())]);
    let err = r.get("token").unwrap_err();
    assert!(
        matches!(&err, Error::Empty { source: Source::FileEnv { var, .. }, .. } if var == "TOKEN_FILE")
    );
}

#[test]
fn not_found_lists_every_place() {
    let dir = TempDir::new();
    let r = reader(&dir, &[]);
    let err = r.get("postgres_password").unwrap_err();
    let Error::NotFound { name, looked } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(name, "postgres_password");
    assert_eq!(looked.len(), 3);
    assert_eq!(
        err.to_string(),
        format!(
            "secret \"postgres_password\" not found; looked at {}, \
             $POSTGRES_PASSWORD_FILE, $POSTGRES_PASSWORD",
            dir.0.join("postgres_password").display()
        )
    );
    let r = Reader::new("/run/secrets").with_env(|_| None);
    assert_eq!(
        r.get("postgres_password").unwrap_err().to_string(),
        "secret \"postgres_password\" not found; looked at \
         /run/secrets/postgres_password, $POSTGRES_PASSWORD_FILE, $POSTGRES_PASSWORD"
    );
}

#[test]
fn unreadable_files_are_io_errors() {
    let dir = TempDir::new();
    // _FILE naming a missing file is an error, not a fall-through.
    let missing = dir.0.join("missing");
    let r = reader(
        &dir,
        &[("TOKEN_FILE", missing.to_str().unwrap()), ("X", "y")],
    );
    let err = r.get("token").unwrap_err();
    let Error::Io { error, source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    assert!(matches!(source, Source::FileEnv { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("NotFound"), "{msg}");
    assert!(std::error::Error::source(&err).is_some());

    // A directory where the secret file should be.
    fs::create_dir(dir.0.join("token")).unwrap();
    let err = reader(&dir, &[]).get("token").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                source: Source::Dir(_),
                ..
            }
        ),
        "{err:?}"
    );

    // Too large.
    dir.write("huge", vec![b'a'; MAX_SECRET_LEN as usize + 1]);
    let err = reader(&dir, &[]).get("huge").unwrap_err();
    let Error::Io { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
    dir.write("just_fits", vec![b'a'; MAX_SECRET_LEN as usize]);
    assert_eq!(
        reader(&dir, &[]).get("just_fits").unwrap().len(),
        MAX_SECRET_LEN as usize
    );
}

#[test]
fn invalid_names() {
    let dir = TempDir::new();
    let r = reader(&dir, &[]);
    for name in ["", "a/b", "/etc/passwd", "a\0b", "..", "a..b", "x=y"] {
        let err = r.get(name).unwrap_err();
        assert!(
            matches!(err, Error::InvalidName { .. }),
            "{name:?}: {err:?}"
        );
        assert!(err.to_string().starts_with("invalid secret name"));
    }
    for name in ["a", "a.b", "a-b", "A_B", "x1"] {
        assert!(
            matches!(r.get(name), Err(Error::NotFound { .. })),
            "{name:?}"
        );
    }
}

#[test]
fn secret_never_shows_its_value() {
    let dir = TempDir::new();
    let path = dir.write("api_key", format!("{VALUE}\n"));
    let s = reader(&dir, &[]).get("api_key").unwrap();
    assert_eq!(s.expose(), VALUE.as_bytes());
    assert_eq!(s.len(), VALUE.len());
    assert!(!s.is_empty());
    assert_hidden(&s, &s);
    assert_eq!(s.to_string(), "<redacted>");
    assert_eq!(
        format!("{s:?}"),
        format!("Secret {{ source: {}, value: <redacted> }}", path.display())
    );
    let c = s.clone();
    assert_eq!(c.expose(), s.expose());
    assert_hidden(&c, &c);
    assert_hidden(&Some(&s), &s.source().to_string());
}

#[test]
fn no_error_variant_shows_the_value() {
    let dir = TempDir::new();
    let not_utf8 = [VALUE.as_bytes(), b"\xff\xfe"].concat();
    dir.write("binary", &not_utf8);
    dir.write("a_dir_value", VALUE); // present but unused
    fs::create_dir(dir.0.join("is_dir")).unwrap();
    let nope = dir.0.join("nope");
    let r = reader(
        &dir,
        &[
            ("MISSING_FILE", nope.to_str().unwrap()),
            ("BOTH", VALUE),
            ("BOTH_FILE", VALUE),
            ("EMPTY", "\n"),
            ("DATABASE_URL", VALUE),
            ("DATABASE_URL_FILE", VALUE),
            ("REDIS_PASSWORD", VALUE),
            ("REDIS_PORT", VALUE),
        ],
    );
    let binary = r.get("binary").unwrap();
    let errors = [
        r.get(VALUE).unwrap_err(), // NotFound (names are not secret, but still)
        r.get("a/b").unwrap_err(),
        r.get("both").unwrap_err(),
        r.get("empty").unwrap_err(),
        r.get("missing").unwrap_err(),
        r.get("is_dir").unwrap_err(),
        binary.expose_str().unwrap_err(),
        r.database_url().unwrap_err(),
        r.redis_url().unwrap_err(),
        reader(&dir, &[]).database_url().unwrap_err(),
    ];
    let kinds: Vec<_> = errors.iter().map(std::mem::discriminant).collect();
    for want in [
        Error::InvalidName {
            name: String::new(),
            reason: "",
        },
        Error::Conflict {
            name: String::new(),
            var: String::new(),
            file_var: String::new(),
        },
        Error::Empty {
            name: String::new(),
            source: Source::Env(String::new()),
        },
        Error::NotUtf8 {
            source: Source::Env(String::new()),
        },
        Error::Io {
            name: String::new(),
            source: Source::Env(String::new()),
            error: io::ErrorKind::Other.into(),
        },
        Error::InvalidVar {
            var: String::new(),
            reason: "",
        },
        Error::CannotBuild {
            name: String::new(),
            missing: vec![],
            looked: vec![],
        },
    ] {
        assert!(
            kinds.contains(&std::mem::discriminant(&want)),
            "variant not covered: {want:?}"
        );
    }
    // The first one deliberately uses the value as a name; skip it.
    for err in &errors[1..] {
        assert_hidden(err, err);
    }
    assert_eq!(
        binary.expose_str().unwrap_err().to_string(),
        format!(
            "secret from {} is not valid UTF-8",
            dir.0.join("binary").display()
        )
    );
    assert_eq!(
        errors[8].to_string(),
        "$REDIS_PORT is not a port number (1-65535)"
    );
}

#[test]
fn fingerprint_is_sha256_prefix() {
    let dir = TempDir::new();
    dir.write("hello", "hello\n");
    let s = reader(&dir, &[]).get("hello").unwrap();
    // sha256("hello") = 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
    assert_eq!(s.fingerprint(), "2cf24dba5fb0");
}

#[test]
fn database_url_prefers_the_secret() {
    let dir = TempDir::new();
    dir.write("database_url", "postgresql://given\n");
    dir.write("postgres_user", "u");
    dir.write("postgres_password", "p");
    let s = reader(&dir, &[]).database_url().unwrap();
    assert_eq!(s.expose(), b"postgresql://given");
    assert!(matches!(s.source(), Source::Dir(_)));
}

#[test]
fn database_url_is_built_and_percent_encoded() {
    let dir = TempDir::new();
    let password = "p@ss/w:rd?#% é";
    dir.write("postgres_user", "app user\n");
    dir.write("postgres_password", format!("{password}\n"));
    let r = reader(&dir, &[]);
    let s = r.database_url().unwrap();
    assert_eq!(
        s.expose_str().unwrap(),
        "postgresql://app%20user:p%40ss%2Fw%3Ard%3F%23%25%20%C3%A9@postgres:5432/app%20user"
    );
    assert_eq!(
        s.source().to_string(),
        "built from postgres_user, postgres_password"
    );
    assert_hidden(&s, &s);
    assert!(!format!("{s:?}").contains("p@ss"));

    let r = reader(
        &dir,
        &[
            ("POSTGRES_HOST", "db.internal"),
            ("POSTGRES_PORT", "6543"),
            ("POSTGRES_DB", "my db"),
        ],
    );
    assert_eq!(
        r.database_url().unwrap().expose_str().unwrap(),
        "postgresql://app%20user:p%40ss%2Fw%3Ard%3F%23%25%20%C3%A9@db.internal:6543/my%20db"
    );

    // Unreserved characters pass through.
    dir.write("postgres_password", "Az09-._~");
    let r = reader(&dir, &[("POSTGRES_HOST", ""), ("POSTGRES_DB", "")]);
    assert_eq!(
        r.database_url().unwrap().expose_str().unwrap(),
        "postgresql://app%20user:Az09-._~@postgres:5432/app%20user"
    );

    let r = reader(&dir, &[("POSTGRES_PORT", "70000")]);
    assert!(matches!(
        r.database_url(),
        Err(Error::InvalidVar { var, .. }) if var == "POSTGRES_PORT"
    ));
}

#[test]
fn database_url_errors_are_not_hidden() {
    let dir = TempDir::new();
    dir.write("postgres_user", "u");
    dir.write("postgres_password", "p");
    let r = reader(
        &dir,
        &[("DATABASE_URL", "x"), ("DATABASE_URL_FILE", "/nonexistent")],
    );
    assert!(matches!(r.database_url(), Err(Error::Conflict { .. })));

    let r = reader(&dir, &[("DATABASE_URL_FILE", "/nonexistent/x")]);
    assert!(matches!(r.database_url(), Err(Error::Io { .. })));

    // A conflict on a part is returned too.
    let r = reader(
        &TempDir::new(),
        &[("POSTGRES_USER", "u"), ("POSTGRES_USER_FILE", "/x")],
    );
    assert!(
        matches!(r.database_url(), Err(Error::Conflict { name, .. }) if name == "postgres_user")
    );
}

#[test]
fn database_url_missing_parts_are_named() {
    let dir = TempDir::new();
    let r = reader(&dir, &[("POSTGRES_USER", "u")]);
    let err = r.database_url().unwrap_err();
    let d = dir.0.display();
    assert_eq!(
        err.to_string(),
        format!(
            "secret \"database_url\" not found and cannot be built: missing postgres_password; \
             looked at {d}/database_url, $DATABASE_URL_FILE, $DATABASE_URL, \
             {d}/postgres_password, $POSTGRES_PASSWORD_FILE, $POSTGRES_PASSWORD"
        )
    );
    let err = reader(&dir, &[]).database_url().unwrap_err();
    let Error::CannotBuild {
        missing, looked, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(missing, &["postgres_user", "postgres_password"]);
    assert_eq!(looked.len(), 9);
}

#[test]
fn redis_url_fallback() {
    let dir = TempDir::new();
    let r = reader(&dir, &[("REDIS_PASSWORD", "a b@c")]);
    let s = r.redis_url().unwrap();
    assert_eq!(s.expose_str().unwrap(), "redis://:a%20b%40c@redis:6379/0");
    assert_eq!(s.source().to_string(), "built from redis_password");

    let r = reader(
        &dir,
        &[
            ("REDIS_PASSWORD", "pw"),
            ("REDIS_HOST", "cache"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "3"),
        ],
    );
    assert_eq!(
        r.redis_url().unwrap().expose_str().unwrap(),
        "redis://:pw@cache:6380/3"
    );

    let r = reader(
        &dir,
        &[("REDIS_PASSWORD", "pw"), ("REDIS_URL", "redis://given\r\n")],
    );
    let s = r.redis_url().unwrap();
    assert_eq!(s.expose(), b"redis://given");
    assert_eq!(s.source(), &Source::Env("REDIS_URL".into()));

    let err = reader(&dir, &[]).redis_url().unwrap_err();
    assert!(
        err.to_string().starts_with(
            "secret \"redis_url\" not found and cannot be built: missing redis_password;"
        ),
        "{err}"
    );
}

#[test]
fn wipe_zeroes_whole_allocation() {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(VALUE.as_bytes());
    buf.truncate(3);
    wipe(&mut buf);
    assert_eq!(buf, [0, 0, 0]);
    // SAFETY: `wipe` wrote every byte of the spare capacity, so it is
    // initialised.
    let spare: Vec<u8> = buf
        .spare_capacity_mut()
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    assert!(spare.len() >= 61);
    assert!(spare.iter().all(|&b| b == 0));
}

#[test]
fn reader_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Reader>();
    check::<Secret>();
    check::<Error>();
    let r = Reader::new("/x");
    assert_eq!(r.dir(), Path::new("/x"));
    assert!(format!("{r:?}").contains("/x"));
}
