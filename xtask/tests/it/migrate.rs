//! `migrate-env-to-secrets` over a corpus of plain `.env` files
//! (`tests/data/migrate/<case>.env`, each run as written and with CRLF line
//! endings): the target env file holds exactly what dotenvy parses from the
//! source, the source keeps every other byte (`<case>.after`), a 0600 backup
//! holds the original, a second run changes nothing, and a conflict writes
//! nothing. Also the compose changes, printed and written.

use crate::support;

use std::{
    collections::BTreeMap,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::Path,
    process::Command,
};

use support::{DEVELOP_SECRETS, Run, TempRepo, strace_or_skip, under_strace};

/// Each case, and whether setup accepts its values afterwards (a PEM in a
/// key secret is migrated, but a key may not hold line breaks).
const CASES: [(&str, bool); 6] = [
    ("quoted", true),
    ("single_quoted_dollar", true),
    ("export_comments", true),
    ("pem", false),
    ("database_url", true),
    ("empty_value", true),
];

const SIGNING_KEY: &str = "\n[secrets.signing_key]\nkind = \"key\"\nenvironments = [\"develop\"]\nservices = [\"backend\"]\n";

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/migrate")
            .join(name),
    )
    .unwrap()
}

fn to_crlf(b: &[u8]) -> Vec<u8> {
    String::from_utf8(b.to_vec())
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes()
}

/// What dotenvy itself parses from a file.
fn dotenv(path: &Path) -> BTreeMap<String, String> {
    dotenvy::from_path_iter(path)
        .unwrap()
        .map(|kv| kv.unwrap())
        .collect()
}

fn backups(repo: &TempRepo) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(&repo.root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(".env.pre-migrate-") && n.ends_with(".bak")
        })
        .collect()
}

fn migrate(repo: &TempRepo, args: &[&str], ok: bool) -> Run {
    let mut all = vec!["migrate-env-to-secrets"];
    all.extend(args);
    let run = repo.run(&all);
    if ok { run.ok() } else { run.fails() }
}

fn run_case(case: &str, setup_ok: bool, crlf: bool) {
    let what = format!("{case}{}", if crlf { " (CRLF)" } else { "" });
    let (mut src, mut after) = (data(&format!("{case}.env")), data(&format!("{case}.after")));
    if crlf {
        (src, after) = (to_crlf(&src), to_crlf(&after));
    }
    let repo = TempRepo::new();
    let mut keys: Vec<String> = DEVELOP_SECRETS.iter().map(|s| s.to_uppercase()).collect();
    if case == "pem" {
        let m = repo.read("deploy/secrets.toml");
        repo.write("deploy/secrets.toml", &format!("{m}{SIGNING_KEY}"));
        keys.push("SIGNING_KEY".into());
    }
    std::fs::write(repo.path(".env"), &src).unwrap();
    let parsed = dotenv(&repo.path(".env"));

    let first = migrate(&repo, &[], setup_ok);
    if !setup_ok {
        assert!(
            first.stderr.contains("the values were migrated"),
            "{what}: {}",
            first.stderr
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(repo.path(".env")).unwrap()),
        String::from_utf8_lossy(&after),
        "{what}: the source must keep every byte but the moved lines"
    );
    let target = dotenv(&repo.path("secrets/develop.env"));
    let kept = dotenv(&repo.path(".env"));
    for (k, v) in &parsed {
        let moved = keys.contains(k) && !v.is_empty() && k != "DATABASE_URL";
        if moved {
            assert_eq!(
                target.get(k),
                Some(v),
                "{what}: {k} is not in the target byte for byte"
            );
            assert!(!kept.contains_key(k), "{what}: {k} still in the source");
            if setup_ok {
                let stored =
                    std::fs::read(repo.path(&format!("secrets/develop/{}", k.to_lowercase())))
                        .unwrap();
                assert_eq!(stored, v.as_bytes(), "{what}: the store does not hold {k}");
            }
        } else if !keys.contains(k) {
            assert!(
                !target.contains_key(k),
                "{what}: {k} is not a secret of the manifest but was moved"
            );
        }
        if v.len() >= 8 {
            assert!(
                !first.all().contains(v.as_str()),
                "{what}: the value of {k} was printed"
            );
        }
    }
    if let Some(url) = parsed.get("DATABASE_URL") {
        assert_eq!(target["POSTGRES_USER"], "raqeem_dev", "{what}");
        assert_eq!(target["POSTGRES_PASSWORD"], "p@ss/w0rd:-Zq9xWv8u", "{what}");
        assert!(
            !target.contains_key("DATABASE_URL"),
            "{what}: the derived URL is rebuilt, not stored"
        );
        assert_eq!(
            std::fs::read_to_string(repo.path("secrets/develop/database_url")).unwrap(),
            *url
        );
        assert!(
            first.stdout.contains("[secrets.redis_url]"),
            "{what}: {}",
            first.stdout
        );
    }
    if case == "export_comments" {
        assert!(
            first
                .stdout
                .contains("[secrets.smtp_password]\n    kind = \"password\""),
            "{}",
            first.stdout
        );
    }
    let b = backups(&repo);
    assert_eq!(b.len(), 1, "{what}: {b:?}");
    assert_eq!(
        std::fs::read(&b[0]).unwrap(),
        src,
        "{what}: the backup is not the original"
    );
    assert_eq!(
        std::fs::metadata(&b[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A second run finds nothing to move and changes nothing.
    let target_bytes = std::fs::read(repo.path("secrets/develop.env")).unwrap();
    let second = migrate(&repo, &[], setup_ok);
    assert!(
        second.stdout.contains("nothing to change"),
        "{what}: {}",
        second.stdout
    );
    assert_eq!(std::fs::read(repo.path(".env")).unwrap(), after, "{what}");
    assert_eq!(
        std::fs::read(repo.path("secrets/develop.env")).unwrap(),
        target_bytes,
        "{what}"
    );
    assert_eq!(backups(&repo).len(), 1, "{what}");
}

#[test]
fn corpus_moves_values_byte_for_byte_and_keeps_every_other_byte() {
    for (case, setup_ok) in CASES {
        for crlf in [false, true] {
            run_case(case, setup_ok, crlf);
        }
    }
}

#[test]
fn a_conflict_writes_nothing_and_names_both_places() {
    let repo = TempRepo::new();
    let mine = "# mine\nPOSTGRES_PASSWORD='Other-Value-123456789'\n";
    repo.write("secrets/develop.env", mine);
    let src = "A=1\nPOSTGRES_USER=someone_x\nPOSTGRES_PASSWORD=Diff3rent-Value-9876543\n";
    std::fs::write(repo.path(".env"), src).unwrap();
    let out = migrate(&repo, &[], false);
    assert!(
        out.stderr
            .contains("POSTGRES_PASSWORD: .env:3 and secrets/develop.env:2 hold different values"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was written"), "{}", out.stderr);
    assert!(
        !out.all().contains("Other-Value") && !out.all().contains("Diff3rent"),
        "a value was printed"
    );
    assert_eq!(repo.read(".env"), src);
    assert_eq!(repo.read("secrets/develop.env"), mine);
    assert!(backups(&repo).is_empty());
    assert!(
        !repo.path("secrets/develop").exists(),
        "setup must not run after a conflict"
    );
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let repo = TempRepo::new();
    let src = "JWT_SECRET=Jw7-Signing-Key-Qx92-abc\nPORT=1\n";
    std::fs::write(repo.path(".env"), src).unwrap();
    let out = migrate(
        &repo,
        &["--dry-run", "--from", ".env", "--to", "develop"],
        true,
    );
    assert!(
        out.stdout.contains("JWT_SECRET")
            && out.stdout.contains("jwt_secret")
            && out.stdout.contains(".env:1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "dry run: would move 1 value(s) into secrets/develop.env and remove 1 line(s) from .env"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(repo.read(".env"), src);
    assert!(!repo.path("secrets/develop.env").exists());
    assert!(backups(&repo).is_empty());
}

#[test]
fn weak_values_are_migrated_with_a_warning_and_go_live_outside_production() {
    let repo = TempRepo::new();
    std::fs::write(repo.path(".env"), "POSTGRES_PASSWORD=short1A\n").unwrap();
    let out = migrate(&repo, &[], true);
    assert!(
        out.stderr.contains("POSTGRES_PASSWORD is 7 characters")
            && out.stderr.contains(
                "`cargo xtask rotate-secrets develop --secret postgres_password` replaces it with a strong one"
            ),
        "{}",
        out.stderr
    );
    assert_eq!(
        dotenv(&repo.path("secrets/develop.env"))["POSTGRES_PASSWORD"],
        "short1A"
    );
    assert_eq!(repo.read(".env"), "");
    // The setup that follows the migration took it, with a warning.
    assert_eq!(repo.read("secrets/develop/postgres_password"), "short1A");
    // A plain setup still refuses it, and verify says it is weak.
    let again = repo.run(&["setup-secrets", "develop"]).fails();
    assert!(
        again.stderr.contains("POSTGRES_PASSWORD is 7 characters"),
        "{}",
        again.stderr
    );
    // Production never takes it live.
    let repo = TempRepo::new();
    std::fs::write(repo.path(".env"), "POSTGRES_PASSWORD=short1A\n").unwrap();
    let out = repo
        .run(&["migrate-env-to-secrets", "--to", "production"])
        .fails();
    assert!(
        out.stderr.contains("production refuses it live")
            && out
                .stderr
                .contains("rotate-secrets production --secret postgres_password"),
        "{}",
        out.stderr
    );
}

/// The shipped compose file with redis reading its password from the
/// environment, as a project coming from a plain `.env` has it.
fn env_style_compose(repo: &TempRepo) -> String {
    let text = repo.read("docker-compose.prod.yml");
    let old = "    secrets: [redis_password]\n    volumes:\n";
    assert!(
        text.contains(old),
        "the shipped compose file changed; update this test"
    );
    let new = text.replace(
        old,
        "    environment:\n      REDIS_PASSWORD: ${REDIS_PASSWORD}  # from .env\n    volumes:\n",
    );
    repo.write("docker-compose.prod.yml", &new);
    new
}

#[test]
fn compose_changes_are_printed_or_written_as_text() {
    let repo = TempRepo::new();
    let before = env_style_compose(&repo);
    std::fs::write(repo.path(".env"), "REDIS_PASSWORD=R3dis-Pa55-word-xyz\n").unwrap();
    let out = migrate(&repo, &[], true);
    assert!(
        out.stdout.contains("service redis: environment REDIS_PASSWORD -> REDIS_PASSWORD_FILE: /run/secrets/redis_password"),
        "{}",
        out.stdout
    );
    assert_eq!(
        repo.read("docker-compose.prod.yml"),
        before,
        "printed only, without --write-compose"
    );

    let repo = TempRepo::new();
    let before = env_style_compose(&repo);
    std::fs::write(repo.path(".env"), "REDIS_PASSWORD=R3dis-Pa55-word-xyz\n").unwrap();
    let out = migrate(&repo, &["--write-compose"], true);
    let want = before.replace(
        "      REDIS_PASSWORD: ${REDIS_PASSWORD}  # from .env\n",
        "      REDIS_PASSWORD_FILE: /run/secrets/redis_password\n",
    )
    .replace(
        "      - redis-data:/data\n    restart: unless-stopped\n",
        "      - redis-data:/data\n    restart: unless-stopped\n    secrets:\n      - redis_password\n",
    );
    assert_eq!(repo.read("docker-compose.prod.yml"), want);
    assert!(
        out.stdout.contains("agree on"),
        "check did not run: {}",
        out.stdout
    );
    // Again: nothing left to change in the compose file either.
    let again = migrate(&repo, &["--write-compose"], true);
    assert!(
        again.stdout.contains("compose changes: none"),
        "{}",
        again.stdout
    );
    assert_eq!(repo.read("docker-compose.prod.yml"), want);
}

#[test]
fn no_value_reaches_a_child_or_the_output() {
    if !strace_or_skip("no_value_reaches_a_child_or_the_output") {
        return;
    }
    let repo = TempRepo::new();
    env_style_compose(&repo);
    let values = [
        "R3dis-Pa55-word-xyz",
        "Jw7-Signing-Key-Qx92-abc",
        "p@ss/w0rd:-Zq9xWv8u",
        "p%40ss%2Fw0rd%3A-Zq9xWv8u",
    ];
    std::fs::write(
        repo.path(".env"),
        format!(
            "REDIS_PASSWORD={}\nJWT_SECRET='{}'\nDATABASE_URL=postgresql://raqeem_dev:{}@postgres:5432/raqeem_develop\nOTHER=${{REDIS_PASSWORD}}\n",
            values[0], values[1], values[3]
        ),
    )
    .unwrap();
    let log = repo.path("strace.log");
    let out = Run::from(
        under_strace(
            &repo.xtask(&["migrate-env-to-secrets", "--write-compose"]),
            true,
            &log,
        )
        .output()
        .unwrap(),
    )
    .ok();
    assert!(
        out.stderr
            .contains(".env:4: OTHER refers to $REDIS_PASSWORD"),
        "{}",
        out.stderr
    );
    let trace = std::fs::read_to_string(&log).unwrap();
    assert!(trace.contains("execve("), "strace recorded nothing");
    for v in values {
        assert!(
            !trace.contains(v),
            "a value reached a child's argv or environment"
        );
        assert!(!out.all().contains(v), "a value was printed");
    }
}

/// Files an interrupted atomic write leaves: `.<name>.tmp-<pid>-<hex>`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.') && n.contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_kill_at_every_rename_converges_on_a_rerun() {
    if !strace_or_skip("a_kill_at_every_rename_converges_on_a_rerun") {
        return;
    }
    let (src, after) = (data("export_comments.env"), data("export_comments.after"));
    let mut completed = false;
    for n in 1..=40 {
        let repo = TempRepo::new();
        std::fs::write(repo.path(".env"), &src).unwrap();
        let parsed = dotenv(&repo.path(".env"));
        let out = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=rename"])
            .arg(format!("--inject=rename:signal=KILL:when={n}"))
            .arg(env!("CARGO_BIN_EXE_xtask"))
            .arg("migrate-env-to-secrets")
            .current_dir(&repo.root)
            .env("CARGO_MANIFEST_DIR", repo.root.join("xtask"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let killed = out.status.signal() == Some(9);
        let again = migrate(&repo, &[], true);
        assert_eq!(
            std::fs::read(repo.path(".env")).unwrap(),
            after,
            "kill at rename {n}: {}",
            again.stdout
        );
        let target = dotenv(&repo.path("secrets/develop.env"));
        for k in ["BETTER_AUTH_SECRET", "API_SECRET_KEY"] {
            assert_eq!(target.get(k), parsed.get(k), "kill at rename {n}: {k}");
            let stored =
                std::fs::read(repo.path(&format!("secrets/develop/{}", k.to_lowercase()))).unwrap();
            assert_eq!(
                stored,
                parsed[k].as_bytes(),
                "kill at rename {n}: the store"
            );
        }
        let b = backups(&repo);
        assert!(!b.is_empty(), "kill at rename {n}: no backup");
        for p in b {
            assert_eq!(
                std::fs::read(&p).unwrap(),
                src,
                "kill at rename {n}: a backup is not the original"
            );
        }
        for dir in ["", "secrets", "secrets/develop"] {
            let left = temp_files(&repo.path(dir));
            assert!(
                left.is_empty(),
                "kill at rename {n}: temporary files left in {dir:?}: {left:?}"
            );
        }
        if !killed {
            completed = true;
            eprintln!(
                "migrate-env-to-secrets: killed at each of {} renames, every re-run converged",
                n - 1
            );
            break;
        }
    }
    assert!(completed, "the run was still renaming after 40 kill points");
}

/// Every file under the copy (but `.git`) with its bytes and mode.
fn tree(repo: &TempRepo) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if rel == ".git" || rel.ends_with(".lock") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    rel,
                    (
                        std::fs::read(&p).unwrap_or_default(),
                        meta.permissions().mode() & 0o7777,
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&repo.root, &repo.root, &mut out);
    out
}

/// `chattr` on a file, or `None` when the file system has no such flags.
fn chattr(flag: &str, p: &Path) -> Option<()> {
    Command::new("chattr")
        .arg(flag)
        .arg(p)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| ())
}

/// A write that fails after others succeeded (the compose file, written
/// last, is immutable: `chattr +i` refuses even root) puts back the backup,
/// the target and the source: every file is as it was, and the message says
/// what refused and that nothing was changed.
#[test]
fn a_failed_write_puts_back_every_file() {
    let repo = TempRepo::new();
    env_style_compose(&repo);
    let value = "R3dis-Immutable-Pa55-41";
    repo.write("secrets/develop.env", "# mine\nPOSTGRES_USER=app_user_x\n");
    std::fs::write(
        repo.path(".env"),
        format!("PORT=1\nREDIS_PASSWORD={value}\n"),
    )
    .unwrap();
    let compose = repo.path("docker-compose.prod.yml");
    if chattr("+i", &compose).is_none() {
        eprintln!(
            "\n*** SKIPPED a_failed_write_puts_back_every_file: chattr +i is not supported here ***\n"
        );
        return;
    }
    let before = tree(&repo);
    let out = repo
        .run(&["migrate-env-to-secrets", "--write-compose"])
        .fails();
    chattr("-i", &compose).unwrap();
    let after = tree(&repo);
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "files changed: {changed:?}\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("docker-compose.prod.yml")
            && out.stderr.contains("immutable")
            && out.stderr.contains("nothing was changed"),
        "{}",
        out.stderr
    );
    assert!(!out.all().contains(value), "a value was printed");
    // The same run, with the flag gone, goes through.
    migrate(&repo, &["--write-compose"], true);
    assert_eq!(
        dotenv(&repo.path("secrets/develop.env"))["REDIS_PASSWORD"],
        value
    );
}

/// The source's folder refuses new files (`chattr +i` on the folder, which
/// refuses root too): the backup cannot be made, so nothing is written at
/// all (no value in the target, no audit line) and the message names the
/// folder and the real cause, not "run as the user who owns it".
#[test]
fn an_unwritable_source_folder_is_found_before_any_write() {
    let repo = TempRepo::new();
    let value = "R3dis-Plain-Folder-Pa55-9";
    std::fs::create_dir(repo.path("plain")).unwrap();
    std::fs::write(repo.path("plain/.env"), format!("REDIS_PASSWORD={value}\n")).unwrap();
    let dir = repo.path("plain");
    if chattr("+i", &dir).is_none() {
        eprintln!(
            "\n*** SKIPPED an_unwritable_source_folder_is_found_before_any_write: chattr +i is not supported here ***\n"
        );
        return;
    }
    let before = tree(&repo);
    let out = repo
        .run(&["migrate-env-to-secrets", "--from", "plain/.env"])
        .fails();
    let again = repo
        .run(&["migrate-env-to-secrets", "--from", "plain/.env"])
        .fails();
    chattr("-i", &dir).unwrap();
    assert_eq!(tree(&repo), before, "{}", out.stderr);
    assert!(!repo.path("deploy/audit-log.tsv").exists());
    assert!(
        out.stderr.contains("nothing was written")
            && out.stderr.contains("plain")
            && out.stderr.contains("immutable"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("run as the user who owns it"),
        "{}",
        out.stderr
    );
    assert!(
        again.stderr.contains("nothing was written"),
        "{}",
        again.stderr
    );
    assert!(!out.all().contains(value) && !again.all().contains(value));
}

/// The shipped compose file with the backend reading REDIS_PASSWORD from
/// the environment through its anchor (`x-secret-env: &secret-env`, merged
/// with `<<: *secret-env`).
fn anchored_compose(repo: &TempRepo) -> String {
    let text = repo.read("docker-compose.prod.yml");
    let old = "x-secret-env: &secret-env\n  SECRETS_DIR: /run/secrets\n";
    assert!(
        text.contains(old),
        "the shipped compose file changed; update this test"
    );
    let new = text.replace(
        old,
        "x-secret-env: &secret-env\n  SECRETS_DIR: /run/secrets\n  REDIS_PASSWORD: ${REDIS_PASSWORD}\n",
    );
    repo.write("docker-compose.prod.yml", &new);
    new
}

/// An anchor that an alias reuses holds a secret's variable: `--write-compose`
/// refuses before any change, naming the anchor's `file:line`; without it
/// (and in a dry run) the migration goes on and the compose changes that
/// cannot be worked out are a warning.
#[test]
fn anchors_refuse_write_compose_but_never_block_the_migration() {
    let value = "R3dis-Anchor-Pa55-word-5";
    let repo = TempRepo::new();
    let compose = anchored_compose(&repo);
    std::fs::write(repo.path(".env"), format!("REDIS_PASSWORD={value}\n")).unwrap();
    let before = tree(&repo);
    let out = migrate(&repo, &["--write-compose"], false);
    assert!(
        out.stderr.contains("nothing was written")
            && out.stderr.contains(
                "docker-compose.prod.yml:12: REDIS_PASSWORD is set inside the anchor &secret-env"
            )
            && out.stderr.contains("through *secret-env"),
        "{}",
        out.stderr
    );
    assert_eq!(
        tree(&repo),
        before,
        "a refused --write-compose changed files"
    );

    let dry = migrate(&repo, &["--dry-run"], true);
    assert!(
        dry.stderr.contains("the compose changes cannot be shown")
            && dry.stdout.contains("dry run: would move 1 value(s)"),
        "{}\n{}",
        dry.stdout,
        dry.stderr
    );
    assert_eq!(tree(&repo), before);

    let out = migrate(&repo, &[], true);
    assert!(
        out.stderr.contains("docker-compose.prod.yml:12")
            && out.stderr.contains("the migration goes on"),
        "{}",
        out.stderr
    );
    assert_eq!(
        dotenv(&repo.path("secrets/develop.env"))["REDIS_PASSWORD"],
        value
    );
    assert_eq!(repo.read("docker-compose.prod.yml"), compose);
    assert!(!out.all().contains(value) && !dry.all().contains(value));
}

/// A compose file indented by 4 spaces is edited in its own indentation,
/// and `check` agrees with the result.
#[test]
fn four_space_compose_files_are_edited_in_their_own_indentation() {
    let repo = TempRepo::new();
    let two = env_style_compose(&repo);
    let four: String = two
        .split_inclusive('\n')
        .map(|l| {
            let n = l.len() - l.trim_start_matches(' ').len();
            format!("{}{}", " ".repeat(2 * n), &l[n..])
        })
        .collect();
    repo.write("docker-compose.prod.yml", &four);
    std::fs::write(repo.path(".env"), "REDIS_PASSWORD=R3dis-Pa55-word-xyz\n").unwrap();
    let out = migrate(&repo, &["--write-compose"], true);
    let want = four
        .replace(
            "            REDIS_PASSWORD: ${REDIS_PASSWORD}  # from .env\n",
            "            REDIS_PASSWORD_FILE: /run/secrets/redis_password\n",
        )
        .replace(
            "            - redis-data:/data\n        restart: unless-stopped\n",
            "            - redis-data:/data\n        restart: unless-stopped\n        secrets:\n            - redis_password\n",
        );
    assert_eq!(repo.read("docker-compose.prod.yml"), want);
    assert!(out.stdout.contains("agree on"), "{}", out.stdout);
}

/// The value moved is the one compose read from the plain file: `$$` is a
/// literal `$`, `${BASE}` is a line above (warned about); the tool writes a
/// `$` as `\$` in double quotes, dotenvy reads that back literally, and no
/// later run warns that the value "contains `$`".
#[test]
fn values_move_as_compose_read_them_and_the_tools_quoting_draws_no_warning() {
    let repo = TempRepo::new();
    std::fs::write(
        repo.path(".env"),
        "BASE='Zq9-base-part'\nPOSTGRES_PASSWORD=${BASE}-tail-x1\nJWT_SECRET=\"it's-$$5-and-\\\\-Long1\"\n",
    )
    .unwrap();
    let out = migrate(&repo, &[], true);
    assert!(
        out.stderr.contains(
            ".env:2: POSTGRES_PASSWORD is expanded as compose read it (${BASE} from .env:1)"
        ),
        "{}",
        out.stderr
    );
    let target = dotenv(&repo.path("secrets/develop.env"));
    assert_eq!(target["POSTGRES_PASSWORD"], "Zq9-base-part-tail-x1");
    assert_eq!(target["JWT_SECRET"], "it's-$5-and-\\-Long1");
    assert!(
        repo.read("secrets/develop.env")
            .contains("JWT_SECRET=\"it's-\\$5-and-\\\\-Long1\"\n"),
        "{}",
        repo.read("secrets/develop.env")
    );
    assert_eq!(
        repo.read("secrets/develop/jwt_secret"),
        "it's-$5-and-\\-Long1"
    );
    assert_eq!(repo.read(".env"), "BASE='Zq9-base-part'\n");
    for run in [&out, &repo.run(&["verify-secrets", "develop"]).ok()] {
        assert!(
            !run.stderr.contains("which dotenv expands"),
            "{}",
            run.stderr
        );
        for v in ["Zq9-base-part", "Long1"] {
            assert!(!run.all().contains(v), "a value was printed");
        }
    }
}
