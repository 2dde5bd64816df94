//! End to end on a real Docker engine: `setup-secrets` then `deploy` bring a
//! test variant of docker-compose.prod.yml up with a locally built `FROM scratch`
//! image, and the containers read every secret through the reader library with
//! the right bytes. Then a changed value reaches the running service on the next deploy.
//!
//! The live proof of the other readers: beside the probe, a Node service (the
//! TypeScript reader) and a Python service (the Python reader), in images built
//! from Debian's `nodejs` and `python3`, read every backend secret through their
//! reader's public API and serve a SHA-256 of the bytes they read; the test
//! compares each with the bytes the tool stored and with what the probe (the
//! Rust reader) serves, after every deploy.

use crate::support;

use std::collections::BTreeMap;
use std::process::Command;

use support::readers::{self, ReaderImages};
use support::{TempRepo, docker, probe_image, sha12, sha256_hex};

const TEST: &str = "compose_stack_reads_every_secret_through_the_reader";

/// The services of the TypeScript and Python readers.
const READER_SERVICES: [&str; 2] = ["node-backend", "python-backend"];

/// What every backend service serves: its secrets, then `redis_url`, which
/// each reader builds from `redis_password`.
fn served() -> Vec<&'static str> {
    support::BACKEND
        .iter()
        .copied()
        .chain(["redis_url"])
        .collect()
}

/// The test variant: the same secrets, wired the same way, served by the
/// probe, and with `readers`, by the Node and Python reader services too.
fn compose_variant(image: &str, readers: Option<&ReaderImages>) -> String {
    let backend = "postgres_user, postgres_password, database_url, better_auth_secret, redis_password, jwt_secret, api_secret_key";
    let names = served()
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        r#"version: "3.8"
services:
  backend:
    image: {image}
    command: ["serve", "--port", "8080", {names}]
    healthcheck:
      test: ["CMD", "/probe", "health", "--port", "8080"]
      interval: 1s
      retries: 20
    secrets: [{backend}]
  grafana:
    image: {image}
    command: ["serve", "--port", "8080", "grafana_admin_password"]
    healthcheck:
      test: ["CMD", "/probe", "health", "--port", "8080"]
      interval: 1s
      retries: 20
    secrets: [grafana_admin_password]
"#
    );
    if let Some(images) = readers {
        let port = readers::PORT;
        s.push_str(&format!(
            r#"  node-backend:
    image: {node}
    command: ["{port}", {names}]
    healthcheck:
      test: ["CMD", "node", "-e", "require('node:http').get('http://127.0.0.1:{port}/health', r => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
      interval: 1s
      retries: 60
    secrets: [{backend}]
  python-backend:
    image: {python}
    command: ["{port}", {names}]
    healthcheck:
      test: ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=5)"]
      interval: 1s
      retries: 60
    secrets: [{backend}]
"#,
            node = images.node,
            python = images.python,
        ));
    }
    s.push_str("secrets:\n");
    for n in backend.split(", ").chain(["grafana_admin_password"]) {
        s.push_str(&format!(
            "  {n}:\n    file: ${{XTASK_SECRETS_DIR:-./secrets/develop}}/{n}\n"
        ));
    }
    s
}

/// Brings the compose project down whatever happens in the test.
struct Down {
    root: std::path::PathBuf,
    project: String,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args([
                "-p",
                &self.project,
                "-f",
                "docker-compose.prod.yml",
                "down",
                "-t",
                "1",
                "-v",
            ])
            .current_dir(&self.root)
            .env("XTASK_SECRETS_DIR", self.root.join("secrets/develop"))
            .output();
    }
}

fn container(project: &str, service: &str) -> String {
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]);
    let id = id.trim().to_string();
    assert!(
        !id.is_empty() && !id.contains('\n'),
        "expected one {service} container, got {id:?}"
    );
    id
}

/// `show NAME...` inside the container: name -> (source, fingerprint).
fn show(id: &str, names: &[&str]) -> Vec<(String, String, String)> {
    let mut args = vec!["exec", id, "/show"];
    args.extend(names);
    docker(&args)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "show printed {l:?}");
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

/// The services a deploy line names: `PREFIX a, b (their secrets changed...`, sorted.
fn recreated<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line"));
    let (list, _) = line
        .split_once(" (their secrets changed")
        .unwrap_or_else(|| panic!("{line:?}"));
    let mut list: Vec<&str> = list.split(", ").collect();
    list.sort_unstable();
    list
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as
/// the readers' URL builders encode the parts.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The redis URL every reader builds from the stored `redis_password`.
fn redis_url(repo: &TempRepo) -> String {
    let password = repo.read("secrets/develop/redis_password");
    format!("redis://:{}@redis:6379/0", percent_encode(&password))
}

/// The live proof: what the Node and Python services read through their
/// readers, and what the probe reads through the Rust one, is byte for byte
/// what the tool stored (the secret files of develop; `redis_url` as built
/// from the stored password). Without `with_readers`, the probe alone.
fn readers_agree(repo: &TempRepo, project: &str, with_readers: bool) {
    let mut want: BTreeMap<&str, Vec<u8>> = support::BACKEND
        .iter()
        .map(|n| {
            (
                *n,
                std::fs::read(repo.path(&format!("secrets/develop/{n}"))).unwrap(),
            )
        })
        .collect();
    want.insert("redis_url", redis_url(repo).into_bytes());
    assert_eq!(want.len(), served().len());

    let probe = container(project, "backend");
    let fps = readers::fingerprints(readers::container_addr(&probe, 8080), "the probe");
    let want_fps: BTreeMap<&str, String> = want.iter().map(|(n, b)| (*n, sha12(b))).collect();
    assert_eq!(
        fps.iter()
            .map(|(n, f)| (n.as_str(), f.clone()))
            .collect::<BTreeMap<_, _>>(),
        want_fps,
        "the probe (Rust reader) read other bytes than the tool stored"
    );
    if !with_readers {
        return;
    }
    for service in READER_SERVICES {
        let id = container(project, service);
        let got = readers::reads(readers::container_addr(&id, readers::PORT), service);
        assert_eq!(
            got.keys().map(String::as_str).collect::<Vec<_>>(),
            want.keys().copied().collect::<Vec<_>>(),
            "{service} served other names"
        );
        for (name, bytes) in &want {
            let read = &got[*name];
            assert_eq!(
                (read.len, read.sha256.as_str()),
                (bytes.len(), sha256_hex(bytes).as_str()),
                "{service}: {name} read other bytes than the tool stored"
            );
            assert_eq!(
                &read.sha256[..12],
                fps[*name],
                "{service} and the probe read other bytes for {name}"
            );
            if *name != "redis_url" {
                assert_eq!(
                    read.source,
                    format!("/run/secrets/{name}"),
                    "{service}: {name} came from elsewhere"
                );
            }
        }
    }
}

#[test]
fn compose_stack_reads_every_secret_through_the_reader() {
    if !support::docker_or_skip(TEST) {
        return;
    }
    let image = probe_image();
    // Declared before the compose project's guard, so the images are removed
    // after its containers.
    let reader_images = readers::images_or_skip(TEST);
    let repo = TempRepo::new();
    let project_name = format!("xt{}", support::unique());
    let mut manifest = repo.read("deploy/secrets.toml").replace(
        "project = \"raqeem\"",
        &format!("project = \"{project_name}\""),
    );
    if reader_images.is_some() {
        // The reader services get every secret the backend gets.
        let with = format!(
            "services = [\"backend\", \"{}\"",
            READER_SERVICES.join("\", \"")
        );
        assert_eq!(manifest.matches("services = [\"backend\"").count(), 7);
        manifest = manifest.replace("services = [\"backend\"", &with);
    }
    std::fs::write(repo.path("deploy/secrets.toml"), manifest).unwrap();
    std::fs::write(
        repo.path("docker-compose.prod.yml"),
        compose_variant(image, reader_images.as_ref()),
    )
    .unwrap();
    // Passwords that would break a URL if they were not encoded.
    repo.write(
        "secrets/develop.env",
        "POSTGRES_PASSWORD='p@ss/w:rd?#%Yz9-ABCDEFGHIJ'\nREDIS_PASSWORD='r3d@s/p:ss?#%Yz9-KLMNOPQRST'\n",
    );
    let mut services = vec!["backend"];
    if reader_images.is_some() {
        services.extend(READER_SERVICES);
    }

    repo.run(&["check"]).ok();
    repo.run(&["setup-secrets", "develop"]).ok();
    let project = format!("{project_name}-develop");
    let _down = Down {
        root: repo.root.clone(),
        project: project.clone(),
    };
    let deploy = repo.run(&["deploy", "develop", "--timeout", "120"]).ok();
    assert!(!deploy.stdout.contains('\r'), "{:?}", deploy.stdout);
    assert!(
        deploy.stdout.contains(&format!(
            "{project}: {} containers running",
            services.len() + 1
        )),
        "{}",
        deploy.all()
    );

    // Every develop secret but grafana's is the backend's.
    let names = &support::DEVELOP_SECRETS[..7];
    let backend = container(&project, "backend");
    let seen = show(&backend, names);
    for (name, source, fp) in &seen {
        let bytes = std::fs::read(repo.path(&format!("secrets/develop/{name}"))).unwrap();
        assert_eq!(
            source,
            &format!("/run/secrets/{name}"),
            "{name} came from {source}"
        );
        assert_eq!(
            fp,
            &sha12(&bytes),
            "{name}: the container read other bytes than the file holds"
        );
    }
    assert_eq!(seen.len(), names.len());
    // The URL the container reads is the encoded one.
    let env = repo.read("secrets/develop.env");
    let user = env
        .lines()
        .find_map(|l| l.strip_prefix("POSTGRES_USER="))
        .unwrap();
    let url = format!(
        "postgresql://{user}:p%40ss%2Fw%3Ard%3F%23%25Yz9-ABCDEFGHIJ@postgres:5432/{project_name}_develop"
    );
    let url_fp = seen
        .iter()
        .find(|s| s.0 == "database_url")
        .unwrap()
        .2
        .clone();
    assert_eq!(url_fp, sha12(url.as_bytes()));
    let grafana = container(&project, "grafana");
    let g = show(&grafana, &["grafana_admin_password"]);
    assert_eq!(
        g[0].2,
        sha12(&std::fs::read(repo.path("secrets/develop/grafana_admin_password")).unwrap())
    );
    // Secrets not given to grafana are not there.
    let out = Command::new("docker")
        .args(["exec", &grafana, "/show", "jwt_secret"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not found"));
    // The redis URL each reader builds from the password, encoded.
    assert_eq!(
        redis_url(&repo),
        "redis://:r3d%40s%2Fp%3Ass%3F%23%25Yz9-KLMNOPQRST@redis:6379/0"
    );
    readers_agree(&repo, &project, reader_images.is_some());

    // A new value reaches the running service: files are replaced by rename,
    // so deploy must recreate the containers that mount it.
    let text = repo.read("secrets/develop.env");
    let new_jwt = "N3wJwtValue-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP";
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("JWT_SECRET=") {
                format!("JWT_SECRET={new_jwt}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    repo.write("secrets/develop.env", &text);
    repo.run(&["deploy", "develop"]).fails(); // refuses: files out of date
    let setup = repo.run(&["setup-secrets", "develop"]).ok();
    assert!(
        setup
            .stdout
            .contains("done: 0 created, 1 updated, 6 unchanged")
            || setup.stdout.contains("1 updated"),
        "{}",
        setup.stdout
    );
    // The dry run names what the real run recreates.
    let dry = repo.run(&["deploy", "develop", "--dry-run"]).ok();
    assert_eq!(
        recreated(&dry.stdout, "would then recreate "),
        services,
        "{}",
        dry.all()
    );
    let deploy = repo.run(&["deploy", "develop", "--timeout", "120"]).ok();
    assert_eq!(
        recreated(&deploy.stdout, "recreating "),
        services,
        "{}",
        deploy.all()
    );
    let backend = container(&project, "backend");
    let seen = show(&backend, &["jwt_secret"]);
    assert_eq!(seen[0].2, sha12(new_jwt.as_bytes()));
    readers_agree(&repo, &project, reader_images.is_some());
    for o in [deploy.all(), setup.all()] {
        assert!(!o.contains(new_jwt));
    }

    // Rotation on the compose backend: a new generated value goes into the env
    // file and the file, the service is recreated and reads it, the log says so.
    let old_key = repo.read("secrets/develop/api_secret_key");
    let rotate = repo
        .run(&[
            "rotate-secrets",
            "develop",
            "--secret",
            "api_secret_key",
            "--timeout",
            "120",
        ])
        .ok();
    let new_key = repo.read("secrets/develop/api_secret_key");
    assert_ne!(old_key, new_key);
    let env = repo.read("secrets/develop.env");
    assert!(
        env.contains(&format!("\nAPI_SECRET_KEY={new_key}\n")),
        "the env file does not hold the new value"
    );
    assert!(
        !rotate.all().contains(&new_key) && !rotate.all().contains(&old_key),
        "a value was printed"
    );
    let backend = container(&project, "backend");
    assert_eq!(
        show(&backend, &["api_secret_key"])[0].2,
        sha12(new_key.as_bytes())
    );
    readers_agree(&repo, &project, reader_images.is_some());
    let log = repo.read("deploy/audit-log.tsv");
    assert!(
        log.lines().any(
            |l| l.contains("\tdevelop\trotate-secrets\tupdate\tapi_secret_key\t")
                && l.ends_with("\tcompose\tok")
        ),
        "{log}"
    );
    assert!(!log.contains(&new_key));
}
