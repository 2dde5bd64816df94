//! The Vault KV store against a real OpenBao dev server that this test starts
//! on a free loopback port (and stops on drop): setup writes every value with
//! its custom metadata, a no-change re-run changes nothing, list shows
//! versions, a changed value becomes version 2 through check-and-set, a change
//! made behind the tool's back between plan and write is refused, the
//! operator's errors name the next step, remove deletes the metadata, and no
//! value reaches any argv. Needs `bao` (`.ci/openbao.sh` installs it).

use crate::support;
use support::servers::cluster::kubectl_ok;
use support::servers::free_port;
use support::{env_value, set_env_value};

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::flows::{Places, StackDown, assert_shown, ok_with_nothing_on_argv, own_project};
use support::servers::openbao::{DevServer, TOKEN, bao_or_skip, path};
use support::{
    BACKEND, ComposeDown, DEVELOP_SECRETS, Run, TempRepo, host_compose, show_in_backend,
};

/// Writes the reader policy (`deploy/vault-reader-policy.hcl`) for
/// `prefix` as `xt-reader`.
fn reader_policy(repo: &TempRepo, srv: &DevServer, prefix: &str) {
    let hcl = repo
        .read("deploy/vault-reader-policy.hcl")
        .replace("raqeem/production", prefix);
    repo.write("reader.hcl", &hcl);
    srv.text(&[
        "policy",
        "write",
        "xt-reader",
        repo.path("reader.hcl").to_str().unwrap(),
    ]);
}

/// A token with `xt-reader` in `secrets/develop.vault-token`, named by
/// develop's reader delivery in the manifest; returns the token.
fn reader_token(repo: &TempRepo, srv: &DevServer) -> String {
    let token = srv.text(&["token", "create", "-policy=xt-reader", "-field=token"]);
    let token = token.trim().to_string();
    repo.write("secrets/develop.vault-token", &token);
    let m = format!(
        "{}\n[environments.develop.vault]\ndelivery = \"reader\"\nservice_token_file = \"secrets/develop.vault-token\"\n",
        repo.read("deploy/secrets.toml")
    );
    repo.write("deploy/secrets.toml", &m);
    token
}

/// The repository copy with develop on the vault store and the compose runtime.
fn vault_repo() -> TempRepo {
    let repo = TempRepo::new();
    let m = repo.read("deploy/secrets.toml");
    let m = m.replacen(
        "[environments.develop]\nbackend = \"compose\"",
        "[environments.develop]\nstore = \"vault\"\nruntime = \"compose\"",
        1,
    );
    assert!(m.contains("store = \"vault\""), "manifest layout changed");
    repo.write("deploy/secrets.toml", &m);
    repo
}

/// xtask against the server; an empty BAO_TOKEN must not win over VAULT_TOKEN.
fn xtask(repo: &TempRepo, srv: &DevServer, args: &[&str]) -> Command {
    let mut c = repo.xtask(args);
    c.env("PATH", path())
        .env("VAULT_ADDR", &srv.addr)
        .env("VAULT_TOKEN", TOKEN)
        .env("BAO_TOKEN", "")
        .env("BAO_ADDR", "")
        .env_remove("VAULT_CLI")
        .env_remove("VAULT_NAMESPACE")
        .env_remove("BAO_NAMESPACE");
    c
}

fn run(repo: &TempRepo, srv: &DevServer, args: &[&str]) -> Run {
    Run::from(xtask(repo, srv, args).output().unwrap())
}

fn new_value(repo: &TempRepo) -> String {
    repo.run(&["generate-secret", "--length", "40"])
        .ok()
        .stdout
        .trim()
        .to_string()
}

fn custom(meta: &Value, key: &str) -> String {
    meta["custom_metadata"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no custom metadata {key}: {meta}"))
        .to_string()
}

#[test]
fn vault_store_end_to_end() {
    if !bao_or_skip("vault_store_end_to_end") {
        return;
    }
    let srv = DevServer::start();
    let repo = vault_repo();

    // Setup writes every secret with its value and custom metadata.
    let first = run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert!(first.stdout.contains("8 created"), "{}", first.all());
    for s in DEVELOP_SECRETS {
        let want = if s == "database_url" {
            None // derived; checked below
        } else {
            Some(env_value(&repo, "develop", &s.to_ascii_uppercase()))
        };
        let got = srv.value(s);
        if let Some(w) = want {
            assert_eq!(got, w, "{s}: Vault holds another value");
        }
        let m = srv.metadata(s);
        assert_eq!(m["current_version"], 1, "{s}");
        assert_eq!(custom(&m, "xtask.tool"), "cargo-xtask");
        assert_eq!(custom(&m, "xtask.project"), "raqeem");
        assert_eq!(custom(&m, "xtask.environment"), "develop");
        let fp = custom(&m, "xtask.fingerprint");
        assert!(
            fp.len() >= 16 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
            "{s}: fingerprint {fp:?}"
        );
        let at = custom(&m, "xtask.rotated-at");
        assert!(at.starts_with("20") && at.ends_with('Z'), "{at}");
    }
    let url = srv.value("database_url");
    assert!(
        url.starts_with("postgresql://")
            && url.contains(&env_value(&repo, "develop", "POSTGRES_USER")),
        "database_url is not built from its parts"
    );

    // A no-change re-run changes nothing and says so.
    let again = run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert!(again.stdout.contains("nothing to do"), "{}", again.all());
    assert_eq!(srv.metadata("jwt_secret")["current_version"], 1);

    // list-secrets shows versions.
    let list = run(&repo, &srv, &["list-secrets", "develop", "--json"]).ok();
    let rows: Value = serde_json::from_str(&list.stdout).unwrap();
    for r in rows.as_array().unwrap() {
        assert_eq!(r["state"], "current", "{r}");
        assert_eq!(r["version"], 1, "{r}");
        assert!(
            r["location"]
                .as_str()
                .unwrap()
                .starts_with("secret/raqeem/develop/"),
            "{r}"
        );
    }
    let fp1 = custom(&srv.metadata("jwt_secret"), "xtask.fingerprint");

    // A changed value becomes version 2 of the same path, through CAS.
    let v2 = new_value(&repo);
    set_env_value(&repo, "develop", "JWT_SECRET", Some(&v2));
    let dry = run(&repo, &srv, &["setup-secrets", "develop", "--dry-run"]).ok();
    assert!(dry.all().contains("-cas=1"), "{}", dry.all());
    assert!(!dry.all().contains(&v2), "dry-run printed a value");
    let upd = run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert!(upd.stdout.contains("1 updated"), "{}", upd.all());
    assert_eq!(srv.value("jwt_secret"), v2);
    let m = srv.metadata("jwt_secret");
    assert_eq!(m["current_version"], 2);
    assert_eq!(custom(&m, "xtask.version"), "2");
    assert_ne!(custom(&m, "xtask.fingerprint"), fp1);
    assert_eq!(srv.metadata("redis_password")["current_version"], 1);
    // list-secrets shows what Vault keeps: the current version and how many.
    let list = run(&repo, &srv, &["list-secrets", "develop", "--json"]).ok();
    let rows: Value = serde_json::from_str(&list.stdout).unwrap();
    let kept = |n: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()["kept"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        kept("jwt_secret").starts_with("v2 current, 2 version(s) kept"),
        "{rows}"
    );
    assert!(
        kept("redis_password").starts_with("v1 current, 1 version(s) kept"),
        "{rows}"
    );
    let text = run(&repo, &srv, &["list-secrets", "develop"]).ok();
    assert!(text.stdout.contains("2 version(s) kept"), "{}", text.all());

    // A change behind the tool's back between plan and write is refused: a
    // VAULT_CLI wrapper writes a version itself right before the first put.
    let wrapper = repo.path("bao-intruder.sh");
    let marker = repo.path("intruded");
    std::fs::write(
        &wrapper,
        format!(
            "#!/usr/bin/env bash\n\
             if [ \"$1 $2\" = \"kv put\" ] && [ ! -e {m} ]; then\n\
               touch {m}\n\
               n=$#; path=\"${{@:n-1:1}}\"; key=\"${{@:n:1}}\"\n\
               bao kv put \"$3\" \"$path\" \"${{key%=-}}=written-behind-the-tools-back\" </dev/null >/dev/null\n\
             fi\n\
             exec bao \"$@\"\n",
            m = marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let v3 = new_value(&repo);
    set_env_value(&repo, "develop", "JWT_SECRET", Some(&v3));
    let raced = Run::from(
        xtask(&repo, &srv, &["setup-secrets", "develop"])
            .env("VAULT_CLI", &wrapper)
            .output()
            .unwrap(),
    )
    .fails();
    assert!(marker.exists(), "the wrapper never ran");
    assert!(
        raced
            .all()
            .contains("jwt_secret changed in Vault since you planned it")
            && raced.all().contains("re-run"),
        "{}",
        raced.all()
    );
    assert_eq!(srv.value("jwt_secret"), "written-behind-the-tools-back");
    assert_eq!(srv.metadata("jwt_secret")["current_version"], 3);
    // The foreign version lists as drift, and a re-run writes over it as v4.
    let list = run(&repo, &srv, &["list-secrets", "develop"]).ok();
    assert!(list.stdout.contains("v3"), "{}", list.all());
    run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert_eq!(srv.value("jwt_secret"), v3);
    assert_eq!(srv.metadata("jwt_secret")["current_version"], 4);

    // strace over setup (one changed value): no value on any argv.
    if support::strace_or_skip("vault_store_end_to_end (strace)") {
        let v5 = new_value(&repo);
        set_env_value(&repo, "develop", "API_SECRET_KEY", Some(&v5));
        let log = repo.path("strace.log");
        let inner = xtask(&repo, &srv, &["setup-secrets", "develop"]);
        let mut c = support::under_strace(&inner, false, &log);
        let traced = Run::from(c.output().unwrap()).ok();
        assert!(traced.stdout.contains("1 updated"), "{}", traced.all());
        let trace = std::fs::read_to_string(&log).unwrap();
        assert!(
            trace.contains("\"kv\", \"put\""),
            "strace saw no kv put:\n{trace}"
        );
        for s in DEVELOP_SECRETS {
            let v = srv.value(s);
            if v.len() >= 12 {
                assert!(!trace.contains(&v), "the value of {s} is on an argv");
            }
        }
        // Without -v strace prints argv in full and only counts the
        // environment, where the token is handed to the CLI.
        assert!(!trace.contains(TOKEN), "the Vault token is on an argv");
        assert_eq!(srv.value("api_secret_key"), v5);
    }

    // Errors that name the next step.
    let down = Run::from(
        xtask(&repo, &srv, &["list-secrets", "develop"])
            .env("VAULT_ADDR", "http://127.0.0.1:1")
            .output()
            .unwrap(),
    )
    .fails();
    assert!(down.all().contains("does not answer"), "{}", down.all());
    let denied = Run::from(
        xtask(&repo, &srv, &["list-secrets", "develop"])
            .env("VAULT_TOKEN", "not-a-token")
            .output()
            .unwrap(),
    )
    .fails();
    assert!(
        denied.all().contains("token was refused") && !denied.all().contains("not-a-token"),
        "{}",
        denied.all()
    );
    let no_cli = Run::from(
        xtask(&repo, &srv, &["list-secrets", "develop"])
            .env("VAULT_CLI", "/nonexistent/bao")
            .output()
            .unwrap(),
    )
    .fails();
    assert!(no_cli.all().contains("VAULT_CLI"), "{}", no_cli.all());
    let m = repo.read("deploy/secrets.toml");
    repo.write(
        "deploy/secrets.toml",
        &format!("{m}\n[environments.develop.vault]\nmount = \"nomount\"\n"),
    );
    let mount = run(&repo, &srv, &["list-secrets", "develop"]).fails();
    assert!(
        mount.all().contains("secrets enable -path=nomount kv-v2"),
        "{}",
        mount.all()
    );
    repo.write(
        "deploy/secrets.toml",
        &format!("{m}\n[environments.develop.vault]\nmounts = \"x\"\n"),
    );
    let typo = run(&repo, &srv, &["list-secrets", "develop"]).fails();
    assert!(
        typo.all().contains("unknown key `mounts`"),
        "{}",
        typo.all()
    );
    repo.write("deploy/secrets.toml", &m);

    // remove-secrets --yes deletes every version and the metadata.
    run(&repo, &srv, &["remove-secrets", "develop", "--yes"]).ok();
    for s in DEVELOP_SECRETS {
        let out = srv.bao(&[
            "kv",
            "metadata",
            "get",
            "-mount=secret",
            &format!("raqeem/develop/{s}"),
        ]);
        assert!(!out.status.success(), "{s} is still in Vault");
    }
    let list = run(&repo, &srv, &["list-secrets", "develop"]).ok();
    assert!(list.stdout.contains("missing"), "{}", list.all());

    // A sealed server says so.
    assert!(srv.bao(&["operator", "seal"]).status.success());
    let sealed = run(&repo, &srv, &["list-secrets", "develop"]).fails();
    assert!(sealed.all().contains("is sealed"), "{}", sealed.all());
    assert!(sealed.all().contains("operator unseal"), "{}", sealed.all());
}

/// Values an operator really writes: quotes, spaces, `$` and `#` in a key,
/// and a multi-line PEM file secret. Vault must hold them byte for byte.
#[test]
fn special_and_multi_line_values_arrive_byte_for_byte() {
    if !bao_or_skip("special_and_multi_line_values_arrive_byte_for_byte") {
        return;
    }
    let srv = DevServer::start();
    let repo = vault_repo();
    let (special, pem) = support::write_special_values(&repo);
    run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert_eq!(srv.value("api_secret_key"), special);
    assert_eq!(srv.value("tls_bundle"), pem);
    let again = run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert!(again.stdout.contains("nothing to do"), "{}", again.all());
}

/// The whole flow on this store under strace: no value, old or new, on any
/// argv or child environment or in any output, and the token on no argv.
#[test]
fn every_command_on_the_vault_store_leaks_nothing() {
    let test = "every_command_on_the_vault_store_leaks_nothing";
    if !bao_or_skip(test) || !support::strace_or_skip(test) {
        return;
    }
    let srv = DevServer::start();
    let repo = vault_repo();
    // Services read Vault at run time here, so a rotation only writes Vault
    // (the fetch redeploy is covered by vault_deploy_fetch_then_reader_on_compose).
    let m = format!(
        "{}\n[environments.develop.vault]\ndelivery = \"reader\"\nservice_token_file = \"secrets/develop.vault-token\"\n",
        repo.read("deploy/secrets.toml")
    );
    repo.write("deploy/secrets.toml", &m);
    let log = repo.path("strace.log");
    let flow: [&[&str]; 7] = [
        &["setup-secrets", "develop"],
        &["setup-secrets", "develop"],
        &["list-secrets", "develop"],
        &["verify-secrets", "develop"],
        &["rotate-secrets", "develop", "--secret", "jwt_secret"],
        &["list-secrets", "develop", "--json"],
        &[
            "remove-secrets",
            "develop",
            "--secret",
            "grafana_admin_password",
            "--yes",
        ],
    ];
    let mut places = Places::default();
    for args in flow {
        let inner = xtask(&repo, &srv, args);
        let mut c = support::under_strace(&inner, true, &log);
        let run = Run::from(c.output().unwrap()).ok();
        let trace = std::fs::read_to_string(&log).unwrap();
        assert!(trace.contains("execve("), "strace recorded nothing");
        // The token is handed to the CLI in its environment, never on argv.
        for line in trace.lines().filter(|l| l.contains("execve(")) {
            let argv = line.split("], [").next().unwrap_or(line);
            assert!(!argv.contains(TOKEN), "the token is on an argv: {args:?}");
        }
        places.add(args, trace, &run);
        for line in repo.read("secrets/develop.env").lines() {
            if let Some((_, v)) = line.split_once('=') {
                places.value(v.trim_matches('\'').to_string());
            }
        }
    }
    places.assert_none_shown(8, "too few values collected");
}

#[test]
fn vault_deploy_fetch_then_reader_on_compose() {
    let test = "vault_deploy_fetch_then_reader_on_compose";
    if !bao_or_skip(test) || !support::docker_or_skip(test) {
        return;
    }
    let srv = DevServer::start();
    let repo = vault_repo();
    let name = own_project(&repo);
    repo.write(
        "docker-compose.prod.yml",
        &host_compose(support::reader_image(), free_port()),
    );
    let project = format!("{name}-develop");
    let _down = ComposeDown {
        root: repo.root.clone(),
        project: project.clone(),
    };
    run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    let in_vault = |s: &str| srv.value_of(&name, s);

    // Under strace when there is one: no value and no token on any argv
    // (docker, docker-compose, the CLI), including the containers' commands.
    let strace = support::strace_or_skip(&format!("{test} (strace)"));
    let log = strace.then(|| repo.path("strace.log"));
    let traced = |args: &[&str], tokens: &[&str]| -> Run {
        let inner = xtask(&repo, &srv, args);
        ok_with_nothing_on_argv(inner, log.as_deref(), &in_vault, tokens, &args.join(" "))
    };
    // Fetch (the default): the values become the compose store's 0600 files.
    let dry = run(&repo, &srv, &["deploy", "develop", "--dry-run"]).ok();
    assert!(
        dry.stdout.contains("would read 8 value(s)"),
        "{}",
        dry.all()
    );
    let d = traced(&["deploy", "develop", "--timeout", "120"], &[TOKEN]);
    assert!(
        d.stdout
            .contains("copies in the compose runtime, read from the vault store"),
        "{}",
        d.all()
    );
    use std::os::unix::fs::PermissionsExt;
    for s in BACKEND {
        let meta = std::fs::metadata(repo.path(&format!("secrets/develop/{s}"))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{s}");
    }
    assert_shown(&show_in_backend(&project, &BACKEND), true, &in_vault);
    let again = run(&repo, &srv, &["deploy", "develop", "--timeout", "120"]).ok();
    assert!(!again.stdout.contains("create "), "{}", again.all());
    // Rotation writes version 2 in Vault, then delivers it like a deploy.
    let rot = traced(
        &["rotate-secrets", "develop", "--secret", "jwt_secret"],
        &[TOKEN],
    );
    assert!(
        rot.stdout.contains("copies in the compose runtime"),
        "{}",
        rot.all()
    );
    let jwt = show_in_backend(&project, &["jwt_secret"]);
    assert_eq!(jwt[0].2, support::sha12(in_vault("jwt_secret").as_bytes()));
    let meta = srv.text(&[
        "kv",
        "metadata",
        "get",
        "-mount=secret",
        "-format=json",
        &format!("{name}/develop/jwt_secret"),
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&meta).unwrap()["data"]["current_version"],
        2
    );

    // Reader: a token with the read-only policy, in a file the manifest names.
    reader_policy(&repo, &srv, &format!("{name}/develop"));
    let token = reader_token(&repo, &srv);
    let dry = run(&repo, &srv, &["deploy", "develop", "--dry-run"]).ok();
    assert!(
        dry.stdout
            .contains("VAULT_TOKEN_FILE: /run/secrets/vault_token"),
        "{}",
        dry.all()
    );
    assert!(!dry.all().contains(token.trim()), "the token was printed");
    let d = traced(
        &["deploy", "develop", "--timeout", "120"],
        &[TOKEN, token.trim()],
    );
    assert!(d.stdout.contains("at run time"), "{}", d.all());
    let shown = show_in_backend(&project, &BACKEND);
    assert_shown(&shown, false, &in_vault);
    for (n, source, _) in &shown {
        assert!(
            source.contains("vault") || source.contains(&name),
            "{n}: {source}"
        );
    }
    // The container holds the token only as a file, never in its environment.
    let id = support::docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    let env = support::docker(&[
        "inspect",
        "--format",
        "{{json .Config.Env}} {{json .Config.Cmd}} {{json .Mounts}}",
        id.trim(),
    ]);
    assert!(
        !env.contains(token.trim()) && !env.contains(TOKEN),
        "a token is in the container's env or argv"
    );
    assert!(
        env.contains("VAULT_TOKEN_FILE=/run/secrets/vault_token"),
        "{env}"
    );
    assert!(
        !env.contains("secrets/develop/jwt_secret"),
        "still mounted: {env}"
    );
    // A rotation in reader mode writes Vault and says when services see it.
    let rot = run(
        &repo,
        &srv,
        &["rotate-secrets", "develop", "--secret", "jwt_secret"],
    )
    .ok();
    assert!(rot.stdout.contains("cache time"), "{}", rot.all());
    let jwt = show_in_backend(&project, &["jwt_secret"]);
    assert_eq!(jwt[0].2, support::sha12(in_vault("jwt_secret").as_bytes()));
    // The operator's own token is never handed to the services.
    repo.write("secrets/develop.vault-token", TOKEN);
    let own = run(&repo, &srv, &["deploy", "develop"]).fails();
    assert!(
        own.all().contains("your own vault credential"),
        "{}",
        own.all()
    );
    assert!(!own.all().contains(TOKEN));
}

/// A token with only deploy/vault-policy.hcl (and Vault's default policy)
/// runs setup, list, verify, rotate and remove.
#[test]
fn the_shipped_operator_policy_is_enough() {
    if !bao_or_skip("the_shipped_operator_policy_is_enough") {
        return;
    }
    let srv = DevServer::start();
    let repo = vault_repo();
    let hcl = repo
        .read("deploy/vault-policy.hcl")
        .replace("raqeem/production", "raqeem/develop");
    repo.write("op.hcl", &hcl);
    srv.text(&[
        "policy",
        "write",
        "xt-operator",
        repo.path("op.hcl").to_str().unwrap(),
    ]);
    let token = srv.text(&["token", "create", "-policy=xt-operator", "-field=token"]);
    let m = format!(
        "{}\n[environments.develop.vault]\ndelivery = \"reader\"\nservice_token_file = \"secrets/develop.vault-token\"\n",
        repo.read("deploy/secrets.toml")
    );
    repo.write("deploy/secrets.toml", &m);
    let as_operator = |args: &[&str]| {
        Run::from(
            xtask(&repo, &srv, args)
                .env("VAULT_TOKEN", token.trim())
                .output()
                .unwrap(),
        )
    };
    as_operator(&["setup-secrets", "develop"]).ok();
    as_operator(&["setup-secrets", "develop"]).ok();
    as_operator(&["list-secrets", "develop"]).ok();
    as_operator(&["verify-secrets", "develop"]).ok();
    as_operator(&["rotate-secrets", "develop", "--secret", "jwt_secret"]).ok();
    assert_eq!(srv.metadata("jwt_secret")["current_version"], 2);
    as_operator(&[
        "remove-secrets",
        "develop",
        "--secret",
        "jwt_secret",
        "--yes",
    ])
    .ok();
    assert!(
        !srv.bao(&[
            "kv",
            "metadata",
            "get",
            "-mount=secret",
            "raqeem/develop/jwt_secret"
        ])
        .status
        .success()
    );
    // A path outside the policy is refused with the next step.
    let other = repo.read("deploy/secrets.toml").replace(
        "delivery = \"reader\"",
        "delivery = \"reader\"\nprefix = \"elsewhere/develop\"",
    );
    repo.write("deploy/secrets.toml", &other);
    let denied = as_operator(&["setup-secrets", "develop"]).fails();
    assert!(
        denied.all().contains("token was refused"),
        "{}",
        denied.all()
    );
}

/// KV v1: values and a sibling metadata entry, no CAS or history.
#[test]
fn kv_v1_mount_setup_rerun_update_list_remove() {
    if !bao_or_skip("kv_v1_mount_setup_rerun_update_list_remove") {
        return;
    }
    let srv = DevServer::start();
    srv.text(&["secrets", "enable", "-path=kv1", "-version=1", "kv"]);
    let repo = vault_repo();
    let base = repo.read("deploy/secrets.toml");
    repo.write(
        "deploy/secrets.toml",
        &format!("{base}\n[environments.develop.vault]\nmount = \"kv1\"\nkv_version = 1\n"),
    );
    let get = |path: &str| {
        let out = srv.bao(&["kv", "get", "-mount=kv1", "-format=json", path]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()["data"].clone())
    };
    let first = run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert!(first.stdout.contains("8 created"), "{}", first.all());
    let jwt = get("raqeem/develop/jwt_secret").unwrap();
    assert_eq!(
        jwt["jwt_secret"],
        env_value(&repo, "develop", "JWT_SECRET").as_str()
    );
    let meta = get("raqeem/develop/.xtask/jwt_secret").unwrap();
    assert_eq!(meta["xtask.version"], "1");
    assert!(meta["xtask.fingerprint"].as_str().unwrap().len() >= 16);
    let again = run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert!(again.stdout.contains("nothing to do"), "{}", again.all());

    let v2 = new_value(&repo);
    set_env_value(&repo, "develop", "JWT_SECRET", Some(&v2));
    let dry = run(&repo, &srv, &["setup-secrets", "develop", "--dry-run"]).ok();
    assert!(!dry.all().contains("-cas"), "{}", dry.all());
    let upd = run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    assert!(upd.stdout.contains("1 updated"), "{}", upd.all());
    assert_eq!(
        get("raqeem/develop/jwt_secret").unwrap()["jwt_secret"],
        v2.as_str()
    );
    assert_eq!(
        get("raqeem/develop/.xtask/jwt_secret").unwrap()["xtask.version"],
        "2"
    );
    let list = run(&repo, &srv, &["list-secrets", "develop", "--json"]).ok();
    let rows: Value = serde_json::from_str(&list.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "jwt_secret")
        .unwrap();
    assert_eq!(row["state"], "current", "{row}");
    assert_eq!(row["version"], 2, "{row}");
    assert!(
        row["kept"].as_str().unwrap().contains("no history"),
        "{row}"
    );
    run(&repo, &srv, &["verify-secrets", "develop"]).ok();

    // Reader delivery needs KV v2: refused with the way out.
    let m = repo.read("deploy/secrets.toml").replace(
        "kv_version = 1",
        "kv_version = 1\ndelivery = \"reader\"\nservice_token_file = \"t\"",
    );
    repo.write("deploy/secrets.toml", &m);
    let r = run(&repo, &srv, &["deploy", "develop", "--dry-run"]).fails();
    assert!(r.all().contains("needs KV v2"), "{}", r.all());

    run(
        &repo,
        &srv,
        &[
            "remove-secrets",
            "develop",
            "--secret",
            "jwt_secret",
            "--yes",
        ],
    )
    .ok();
    assert!(get("raqeem/develop/jwt_secret").is_none());
    assert!(get("raqeem/develop/.xtask/jwt_secret").is_none());
}

/// `show NAME...` in the stack's backend task: its stdout.
fn show_text(stack: &str, names: &[&str]) -> String {
    let id = support::docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={stack}_backend"),
    ]);
    let id = id.lines().next().unwrap_or_default().trim().to_string();
    assert!(!id.is_empty(), "no running backend task");
    let mut args = vec!["exec", id.as_str(), "/show"];
    args.extend(names);
    let out = Command::new("docker").args(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `show NAME...` in the stack's backend task: name, source, fingerprint.
fn show_in_task(stack: &str, names: &[&str]) -> Vec<(String, String, String)> {
    support::show_lines(&show_text(stack, names))
}

#[test]
fn vault_deploy_fetch_then_reader_on_swarm() {
    let test = "vault_deploy_fetch_then_reader_on_swarm";
    if !bao_or_skip(test) || !support::swarm_or_skip(test) {
        return;
    }
    let srv = DevServer::start();
    let repo = vault_repo();
    let name = own_project(&repo);
    let m = repo
        .read("deploy/secrets.toml")
        .replace("runtime = \"compose\"", "runtime = \"swarm\"");
    repo.write("deploy/secrets.toml", &m);
    let port = free_port();
    let mut stack = format!(
        "version: \"3.8\"\nservices:\n  backend:\n    image: {}\n    command: [\"serve\", \"--port\", \"{port}\", \"jwt_secret\"]\n    networks: [hostnet]\n    secrets: [{}]\nnetworks:\n  hostnet:\n    external: true\n    name: host\nsecrets:\n",
        support::reader_image(),
        BACKEND.join(", ")
    );
    for n in BACKEND {
        let var = n.to_ascii_uppercase();
        stack.push_str(&format!(
            "  {n}:\n    external: true\n    name: ${{XTASK_SECRET_{var}:?set by cargo xtask deploy}}\n"
        ));
    }
    repo.write("docker-compose.swarm.yml", &stack);
    let _down = StackDown(name.clone());
    let st = format!("{name}-develop");
    let go = |args: &[&str]| {
        Run::from(
            xtask(&repo, &srv, args)
                .env("XTASK_RESOLVE_IMAGE", "never")
                .output()
                .unwrap(),
        )
    };
    go(&["setup-secrets", "develop"]).ok();
    let in_vault = |s: &str| srv.value_of(&name, s);

    // Fetch: versioned swarm secrets, the stack file as it is.
    let d = go(&["deploy", "develop", "--timeout", "180"]).ok();
    assert!(
        d.stdout.contains("copies in the swarm runtime"),
        "{}",
        d.all()
    );
    assert_shown(&show_in_task(&st, &BACKEND), true, &in_vault);
    let rot = go(&[
        "rotate-secrets",
        "develop",
        "--secret",
        "jwt_secret",
        "--timeout",
        "180",
    ])
    .ok();
    assert!(
        rot.stdout
            .contains(&format!("{name}_develop_jwt_secret_v2")),
        "{}",
        rot.all()
    );
    let jwt = show_in_task(&st, &["jwt_secret"]);
    assert_eq!(jwt[0].2, support::sha12(in_vault("jwt_secret").as_bytes()));

    // Reader: the token as a versioned swarm secret, the copies removed.
    reader_policy(&repo, &srv, "raqeem/production");
    let token = reader_token(&repo, &srv);
    let d = go(&["deploy", "develop", "--timeout", "180"]).ok();
    assert!(
        d.stdout
            .contains("removed copies the services no longer use"),
        "{}",
        d.all()
    );
    let left = support::docker(&[
        "secret",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label=xtask.project={name}"),
    ]);
    assert_eq!(
        left.trim(),
        format!("{name}_develop_vault_token_v1"),
        "{left}"
    );
    // The reader policy names raqeem/production: this token may not read
    // develop, and the service says so, naming the path, never the token.
    let seen = show_text(&st, &["jwt_secret"]);
    assert!(
        seen.contains("HTTP 403")
            && seen.contains(&format!("secret/data/{name}/develop/jwt_secret")),
        "{seen}"
    );
    assert!(
        !seen.contains(token.trim()),
        "the token is in an error message"
    );
    reader_policy(&repo, &srv, &format!("{name}/develop"));
    assert_shown(&show_in_task(&st, &BACKEND), false, &in_vault);
}

/// Deletes the test's namespace whatever happened.
struct NamespaceDown(String);

impl Drop for NamespaceDown {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.0,
                "--wait=true",
                "--timeout=90s",
            ])
            .output();
    }
}

/// One Deployment of the reader image on the host network (so it reaches
/// the dev server on 127.0.0.1), mounting the backend's secrets as the
/// shipped manifests do. `Recreate`: two pods cannot share the host port.
fn reader_deployment(image: &str, port: u16) -> String {
    let mut s = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: backend}}\nspec:\n  replicas: 1\n  strategy: {{type: Recreate}}\n  selector: {{matchLabels: {{app: backend}}}}\n  template:\n    metadata: {{labels: {{app: backend}}}}\n    spec:\n      hostNetwork: true\n      automountServiceAccountToken: false\n      enableServiceLinks: false\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: backend\n        image: {image}\n        imagePullPolicy: Never\n        args: [\"serve\", \"--port\", \"{port}\", \"jwt_secret\"]\n        env: [{{name: SECRETS_CACHE_SECONDS, value: \"1\"}}]\n        volumeMounts: [{{name: secrets, mountPath: /run/secrets, readOnly: true}}]\n      volumes:\n      - name: secrets\n        projected:\n          sources:\n"
    );
    for n in BACKEND {
        let var = n.to_ascii_uppercase();
        s.push_str(&format!(
            "          - secret: {{name: \"${{XTASK_SECRET_{var}:?set by cargo xtask deploy}}\", items: [{{key: {n}, path: {n}}}]}}\n"
        ));
    }
    s
}

/// `show NAME...` in the backend pod: name, source, fingerprint.
fn show_in_pod(ns: &str, names: &[&str]) -> Vec<(String, String, String)> {
    let mut args = vec!["-n", ns, "exec", "deploy/backend", "--", "/show"];
    args.extend(names);
    let out = Command::new("kubectl").args(&args).output().unwrap();
    support::show_lines(&String::from_utf8_lossy(&out.stdout))
}

/// `store = "vault"`, `runtime = "k8s"` on the real cluster: fetch delivers
/// versioned Kubernetes Secrets; reader delivery then mounts only the
/// services' token (a versioned Secret of its own), sets the reader's
/// variables in the pod spec, removes the copies nothing uses any more, and
/// the pod reads every value from Vault, a rotation within the cache time.
#[test]
fn vault_deploy_fetch_then_reader_on_kubernetes() {
    let test = "vault_deploy_fetch_then_reader_on_kubernetes";
    if !bao_or_skip(test) || !support::cluster_or_skip(test) || !support::docker_or_skip(test) {
        return;
    }
    let srv = DevServer::start();
    let repo = vault_repo();
    let name = own_project(&repo);
    let ns = format!("{name}-develop");
    let m = repo
        .read("deploy/secrets.toml")
        .replace("runtime = \"compose\"", "runtime = \"k8s\"");
    repo.write("deploy/secrets.toml", &m);
    std::fs::remove_dir_all(repo.path("deploy/k8s")).unwrap();
    repo.write(
        "deploy/k8s/backend.yaml",
        &reader_deployment(support::reader_image(), free_port()),
    );
    support::load_into_cluster(support::reader_image());
    let _down = NamespaceDown(ns.clone());
    kubectl_ok(&["create", "namespace", &ns]);
    kubectl_ok(&["label", "namespace", &ns, "xtask-test=vault-k8s"]);
    run(&repo, &srv, &["setup-secrets", "develop"]).ok();
    let in_vault = |s: &str| srv.value_of(&name, s);
    let ours = format!("xtask.project={name}");
    let secrets = || kubectl_ok(&["-n", &ns, "get", "secrets", "-l", &ours, "-o", "name"]);

    // Fetch: versioned Kubernetes Secrets, mounted as files.
    let d = run(&repo, &srv, &["deploy", "develop", "--timeout", "180"]).ok();
    assert!(
        d.stdout
            .contains("copies in the k8s runtime, read from the vault store"),
        "{}",
        d.all()
    );
    let copies = secrets();
    for n in BACKEND {
        let id = format!("secret/{name}-develop-{}-v1", n.replace('_', "-"));
        assert!(copies.lines().any(|l| l == id), "{id} not in {copies}");
    }
    assert_shown(&show_in_pod(&ns, &BACKEND), true, &in_vault);

    // Reader: a token with the read-only policy, in a file the manifest names.
    reader_policy(&repo, &srv, &format!("{name}/develop"));
    let token = reader_token(&repo, &srv);
    let token = token.as_str();
    // A manifest reader delivery cannot render fails before anything is
    // written: no token Secret.
    let good = repo.read("deploy/k8s/backend.yaml");
    repo.write(
        "deploy/k8s/backend.yaml",
        &good.replace(
            "mountPath: /run/secrets,",
            "mountPath: /run/secrets/jwt_secret, subPath: jwt_secret,",
        ),
    );
    let bad = run(&repo, &srv, &["deploy", "develop"]).fails();
    assert!(bad.all().contains("with a subPath"), "{}", bad.all());
    assert!(!secrets().contains("vault-token"), "{}", secrets());
    repo.write("deploy/k8s/backend.yaml", &good);
    let dry = run(&repo, &srv, &["deploy", "develop", "--dry-run"]).ok();
    assert!(
        dry.stdout.contains("value: /run/secrets/vault_token")
            && dry
                .stdout
                .contains(&format!("{name}-develop-vault-token-v1"))
            && !dry.stdout.contains("XTASK_SECRET_JWT_SECRET"),
        "{}",
        dry.all()
    );
    assert!(!dry.all().contains(token), "the token was printed");
    let strace = support::strace_or_skip(&format!("{test} (strace)"));
    let log = strace.then(|| repo.path("strace.log"));
    let d = ok_with_nothing_on_argv(
        xtask(&repo, &srv, &["deploy", "develop", "--timeout", "180"]),
        log.as_deref(),
        &in_vault,
        &[TOKEN, token],
        "reader deploy on k8s",
    );
    assert!(
        d.stdout
            .contains("removed copies the services no longer use")
            && d.stdout.contains("at run time"),
        "{}",
        d.all()
    );
    assert_eq!(
        secrets().trim(),
        format!("secret/{name}-develop-vault-token-v1"),
        "only the token is left"
    );
    let pod = kubectl_ok(&["-n", &ns, "get", "pods", "-o", "json"]);
    assert!(
        !pod.contains(token) && !pod.contains(TOKEN),
        "a token in the pod spec"
    );
    let spec: Value = serde_json::from_str(&pod).unwrap();
    let env = &spec["items"][0]["spec"]["containers"][0]["env"];
    let var = |k: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == k)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no {k} in {env}"))
            .to_string()
    };
    assert_eq!(var("VAULT_TOKEN_FILE"), "/run/secrets/vault_token");
    assert_eq!(var("VAULT_ADDR"), srv.addr);
    assert_eq!(var("SECRETS_ORDER"), "vault");
    assert_shown(&show_in_pod(&ns, &BACKEND), false, &in_vault);

    // A rotation in reader mode writes Vault; the pod sees it within the
    // cache time, without a restart.
    let before = kubectl_ok(&["-n", &ns, "get", "pods", "-o", "name"]);
    let rot = run(
        &repo,
        &srv,
        &["rotate-secrets", "develop", "--secret", "jwt_secret"],
    )
    .ok();
    assert!(rot.stdout.contains("cache time"), "{}", rot.all());
    let want = support::sha12(in_vault("jwt_secret").as_bytes());
    let start = Instant::now();
    while show_in_pod(&ns, &["jwt_secret"])[0].2 != want {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the rotation did not reach the pod"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        kubectl_ok(&["-n", &ns, "get", "pods", "-o", "name"]),
        before,
        "a pod restarted"
    );
}
