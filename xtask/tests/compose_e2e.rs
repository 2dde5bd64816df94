//! End to end on a real Docker engine: `setup-secrets` then `deploy` bring a
//! test variant of docker-compose.prod.yml up with a locally built `FROM scratch`
//! image, and the containers read every secret through the reader library with
//! the right bytes. Then a changed value reaches the running service on the next deploy.

mod support;

use std::process::Command;

use support::{TempRepo, docker, probe_image, sha12};

/// The test variant: the same secrets, wired the same way, served by the probe.
fn compose_variant(image: &str) -> String {
    let backend = "postgres_user, postgres_password, database_url, better_auth_secret, redis_password, jwt_secret, api_secret_key";
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
secrets:
"#,
        names = backend
            .split(", ")
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", "),
    );
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

#[test]
fn compose_stack_reads_every_secret_through_the_reader() {
    if !support::docker_or_skip("compose_stack_reads_every_secret_through_the_reader") {
        return;
    }
    let image = probe_image();
    let repo = TempRepo::new();
    let project_name = format!("xt{}", support::unique());
    let manifest = repo.read("deploy/secrets.toml").replace(
        "project = \"raqeem\"",
        &format!("project = \"{project_name}\""),
    );
    std::fs::write(repo.path("deploy/secrets.toml"), manifest).unwrap();
    std::fs::write(repo.path("docker-compose.prod.yml"), compose_variant(image)).unwrap();
    // A password that would break a URL if it were not encoded.
    repo.write(
        "secrets/develop.env",
        "POSTGRES_PASSWORD='p@ss/w:rd?#%Yz9-ABCDEFGHIJ'\n",
    );

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
        deploy
            .stdout
            .contains(&format!("{project}: 2 containers running")),
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
    assert!(
        dry.stdout
            .contains("would then recreate backend (their secrets changed"),
        "{}",
        dry.all()
    );
    let deploy = repo.run(&["deploy", "develop", "--timeout", "120"]).ok();
    assert!(
        deploy.stdout.contains("recreating backend"),
        "{}",
        deploy.all()
    );
    let backend = container(&project, "backend");
    let seen = show(&backend, &["jwt_secret"]);
    assert_eq!(seen[0].2, sha12(new_jwt.as_bytes()));
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
