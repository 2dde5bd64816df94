//! Offline checks of the Kubernetes manifests in `deploy/k8s/`: they render with
//! compose-style interpolation as `cargo xtask deploy` renders them, validate
//! against the real API schemas of Kubernetes 1.34 (the test cluster) and of
//! the newest release the validator carries, and keep the rules the tool relies
//! on (one projected `secrets` volume at /run/secrets, the same secrets per
//! service as docker-compose.swarm.yml, no secret in env, a pull policy on every
//! container).
//!
//! Schemas: PyPI's `kubernetes-validate` on PATH (`.ci/run` installs 1.37.0).
//! Its releases carry a window of schemas and are numbered after the newest:
//! 1.37.0 has 1.25 to 1.37, so one release covers both versions. A missing
//! tool fails the test under `CI=true` and skips it loudly elsewhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use serde_norway::Value;

use crate::support::ci;

const PROJECT: &str = "raqeem";
const ENV: &str = "production";
/// The test cluster's Kubernetes version (`.ci/k8s/up.sh`).
const CLUSTER_VERSION: &str = "1.34.0";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The services of docker-compose.swarm.yml and the secrets each mounts.
fn swarm_secrets() -> BTreeMap<String, BTreeSet<String>> {
    let path = repo_root().join("docker-compose.swarm.yml");
    let doc: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for (name, svc) in doc["services"].as_mapping().unwrap() {
        let mut set = BTreeSet::new();
        for s in svc["secrets"].as_sequence().into_iter().flatten() {
            let source = match s {
                Value::String(s) => s.clone(),
                m => {
                    let source = m["source"].as_str().unwrap().to_string();
                    match m["target"].as_str() {
                        // A kept_by service mounts the version it started with.
                        Some(target) if source == format!("{target}_kept") => target.to_string(),
                        Some(target) => {
                            assert_eq!(target, source, "swarm file: target differs from source");
                            source
                        }
                        None => source,
                    }
                }
            };
            set.insert(source);
        }
        out.insert(name.as_str().unwrap().to_string(), set);
    }
    out
}

/// The dummy name of a secret's current version, as the tool would pass it.
fn dummy_secret_name(secret: &str) -> String {
    format!("{PROJECT}-{ENV}-{}-v1", secret.replace('_', "-"))
}

/// The variables `cargo xtask deploy` sets: project, environment and one
/// `XTASK_SECRET_<NAME>` per secret of the stack. Image and pull-policy
/// overrides stay unset, so their defaults are what gets validated.
fn deploy_vars() -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("XTASK_PROJECT".into(), PROJECT.into());
    vars.insert("XTASK_ENV".into(), ENV.into());
    for secret in swarm_secrets().into_values().flatten() {
        vars.insert(
            format!("XTASK_SECRET_{}", secret.to_uppercase()),
            dummy_secret_name(&secret),
        );
        // The version a kept_by server runs (deploy sets it for every secret
        // with kept_by; here every secret gets one).
        let base = secret.strip_suffix("_kept").unwrap_or(&secret);
        vars.entry(format!("XTASK_SECRET_{}_KEPT", base.to_uppercase()))
            .or_insert_with(|| dummy_secret_name(base));
    }
    vars
}

/// Compose-style interpolation, strict: `$$` is a literal `$`; `${VAR}`,
/// `${VAR:-default}`, `${VAR-default}`, `${VAR:?msg}` and `${VAR?msg}` as in
/// Compose; anything else after a `$` is an error (Compose would read `$name`
/// as a variable too), as is a plain `${VAR}` that is not set.
fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let line = text[..text.len() - rest.len() + i].lines().count().max(1);
        let after = &rest[i + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some(inner_start) = after.strip_prefix('{') else {
            return Err(format!(
                "line {line}: a lone `$` (write `$$` for a literal dollar sign)"
            ));
        };
        let end = inner_start
            .find('}')
            .ok_or_else(|| format!("line {line}: unclosed `${{`"))?;
        let inner = &inner_start[..end];
        let name_len = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let (name, op) = inner.split_at(name_len);
        if name.is_empty() {
            return Err(format!("line {line}: `${{{inner}}}` has no variable name"));
        }
        let value = vars.get(name).map(String::as_str);
        let set_nonempty = value.filter(|v| !v.is_empty());
        let rendered = if op.is_empty() {
            value
                .ok_or_else(|| format!("line {line}: `${{{name}}}` is not set by the tool"))?
                .to_string()
        } else if let Some(default) = op.strip_prefix(":-") {
            set_nonempty.unwrap_or(default).to_string()
        } else if let Some(default) = op.strip_prefix('-') {
            value.unwrap_or(default).to_string()
        } else if let Some(msg) = op.strip_prefix(":?") {
            set_nonempty
                .ok_or_else(|| format!("line {line}: {name}: {msg}"))?
                .to_string()
        } else if let Some(msg) = op.strip_prefix('?') {
            value
                .ok_or_else(|| format!("line {line}: {name}: {msg}"))?
                .to_string()
        } else {
            return Err(format!("line {line}: unsupported `${{{inner}}}`"));
        };
        out.push_str(&rendered);
        rest = &inner_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every manifest, by service name (the file stem), rendered.
fn rendered_manifests() -> BTreeMap<String, String> {
    let dir = repo_root().join("deploy/k8s");
    let vars = deploy_vars();
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let rendered = render(&text, &vars).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // A ConfigMap may carry a shell script, whose own `${...}` is
        // written `$${...}` and renders to `${...}`; nothing else may.
        assert!(
            rendered
                .split("\n---")
                .filter(|doc| !doc.contains("\nkind: ConfigMap"))
                .all(|doc| !doc.contains("${")),
            "{}: `${{` left after rendering (an escaped `$${{`?)",
            path.display()
        );
        let service = path.file_stem().unwrap().to_str().unwrap().to_string();
        out.insert(service, rendered);
    }
    out
}

/// The YAML documents of a file (separated by `---` lines).
fn documents(text: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let last = docs.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.iter()
        .map(|d| serde_norway::from_str::<Value>(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn render_follows_compose_rules() {
    let vars: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
    let ok = |t: &str| render(t, &vars).unwrap();
    assert_eq!(
        ok("${A} ${A:-d} ${B:-d} ${B-d} ${A:?m} $$A $${A}"),
        "x x d d x $A ${A}"
    );
    for bad in [
        "$A",
        "$(cat f)",
        "${B}",
        "${B:?set me}",
        "${B?m}",
        "${A",
        "${:-x}",
    ] {
        assert!(render(bad, &vars).is_err(), "{bad} should not render");
    }
}

#[test]
fn manifests_keep_the_tools_contract() {
    let swarm = swarm_secrets();
    let manifests = rendered_manifests();
    assert_eq!(
        manifests.keys().collect::<BTreeSet<_>>(),
        swarm.keys().collect::<BTreeSet<_>>(),
        "deploy/k8s must hold one <service>.yaml per service of docker-compose.swarm.yml"
    );
    for (service, text) in &manifests {
        let raw = std::fs::read_to_string(repo_root().join(format!("deploy/k8s/{service}.yaml")))
            .unwrap();
        for forbidden in ["secretKeyRef", "secretRef"] {
            assert!(
                !raw.contains(forbidden),
                "{service}.yaml: {forbidden}: secrets go in files, never in env"
            );
        }
        let docs = documents(text);
        for doc in &docs {
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{service}.yaml: no metadata.namespace (the tool passes -n)"
            );
            // Server-side apply before 1.21 rejects a port without its
            // protocol (a list key); the schemas do not catch it.
            let kind = doc["kind"].as_str().unwrap_or_default();
            let ports: Vec<&Value> = if kind == "Service" {
                doc["spec"]["ports"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .collect()
            } else {
                ["initContainers", "containers"]
                    .iter()
                    .flat_map(|k| {
                        doc["spec"]["template"]["spec"][*k]
                            .as_sequence()
                            .into_iter()
                            .flatten()
                    })
                    .flat_map(|c| c["ports"].as_sequence().into_iter().flatten())
                    .collect()
            };
            for port in ports {
                assert!(
                    port["protocol"].is_string(),
                    "{service}.yaml: {kind} port {:?} needs `protocol: TCP` \
                     (server-side apply keys the ports list on port and protocol)",
                    port.get("name")
                );
            }
        }
        let workloads: Vec<&Value> = docs
            .iter()
            .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
            .collect();
        assert_eq!(workloads.len(), 1, "{service}.yaml: one workload");
        let w = workloads[0];
        assert_eq!(w["metadata"]["name"].as_str(), Some(service.as_str()));
        check_workload(service, w, &swarm[service]);
        let services: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("Service"))
            .collect();
        assert_eq!(services.len(), 1, "{service}.yaml: one Service");
        assert_eq!(
            services[0]["metadata"]["name"].as_str(),
            Some(service.as_str())
        );
        let selector = services[0]["spec"]["selector"].as_mapping().unwrap();
        let pod_labels = w["spec"]["template"]["metadata"]["labels"]
            .as_mapping()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{service}: Service selector {k:?} does not match the pod labels"
            );
        }
    }
}

fn check_workload(service: &str, w: &Value, expected: &BTreeSet<String>) {
    let pod = &w["spec"]["template"]["spec"];
    let labels = &w["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"].as_str(), Some(service));
    assert_eq!(labels["app.kubernetes.io/part-of"].as_str(), Some(PROJECT));
    assert_eq!(
        labels["app.kubernetes.io/managed-by"].as_str(),
        Some("cargo-xtask")
    );
    assert_eq!(
        pod["automountServiceAccountToken"].as_bool(),
        Some(false),
        "{service}: automountServiceAccountToken: false"
    );

    // Exactly one volume is the secrets, projected, 0440.
    let volumes = pod["volumes"].as_sequence().unwrap();
    let secret_volumes: Vec<&Value> = volumes
        .iter()
        .filter(|v| v.get("secret").is_some() || v.get("projected").is_some())
        .collect();
    assert_eq!(
        secret_volumes.len(),
        1,
        "{service}: one projected volume holds all secrets"
    );
    let vol = secret_volumes[0];
    assert_eq!(vol["name"].as_str(), Some("secrets"), "{service}");
    let projected = &vol["projected"];
    assert!(projected.is_mapping(), "{service}: `secrets` is projected");
    assert_eq!(
        projected["defaultMode"].as_u64(),
        Some(0o440),
        "{service}: defaultMode 0440"
    );

    let mut found = BTreeSet::new();
    for source in projected["sources"].as_sequence().unwrap() {
        let secret = &source["secret"];
        assert!(secret.is_mapping(), "{service}: only secret sources");
        let items = secret["items"].as_sequence().unwrap();
        assert_eq!(items.len(), 1, "{service}: one key per Secret");
        let key = items[0]["key"].as_str().unwrap();
        assert_eq!(
            items[0]["path"].as_str(),
            Some(key),
            "{service}: path must equal key"
        );
        assert_eq!(
            secret["name"].as_str(),
            Some(dummy_secret_name(key).as_str()),
            "{service}: {key} must come from XTASK_SECRET_{}",
            key.to_uppercase()
        );
        assert!(found.insert(key.to_string()), "{service}: {key} twice");
    }
    assert_eq!(
        &found, expected,
        "{service}: secrets differ from docker-compose.swarm.yml"
    );

    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_sequence().into_iter().flatten())
        .collect();
    assert!(!containers.is_empty());
    for c in containers {
        let name = c["name"].as_str().unwrap();
        assert!(
            c["imagePullPolicy"].as_str().is_some_and(|p| !p.is_empty()),
            "{service}/{name}: imagePullPolicy"
        );
        assert!(
            c.get("envFrom").is_none(),
            "{service}/{name}: no envFrom (secrets never in env)"
        );
        let mounts = c["volumeMounts"].as_sequence().unwrap();
        let at_secrets: Vec<&Value> = mounts
            .iter()
            .filter(|m| m["mountPath"].as_str() == Some("/run/secrets"))
            .collect();
        assert_eq!(at_secrets.len(), 1, "{service}/{name}: mounts /run/secrets");
        assert_eq!(at_secrets[0]["name"].as_str(), Some("secrets"));
        assert_eq!(
            at_secrets[0]["readOnly"].as_bool(),
            Some(true),
            "{service}/{name}: /run/secrets read-only"
        );
    }
}

/// `kubernetes-validate --version` as (major, minor).
fn tool_version(tool: &Path) -> Option<(u32, u32)> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Loud skip outside CI, failure under CI. Written to stderr directly: libtest
/// captures `eprintln!` of a passing test, and a skip must be seen.
fn missing(what: &str) {
    if ci() {
        panic!("{what}; .ci/run must install it");
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED k8s_manifests schema check: {what} ***\n"
    );
}

/// Runs `tool --strict -k version` on every file and requires a pass for every
/// document: the tool exits 0 on a kind it has no schema for (it only warns),
/// so warnings fail here too.
fn validate(tool: &Path, version: &str, files: &[PathBuf], documents: usize) {
    let out = Command::new(tool)
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{} {} --strict -k {version}:\n{stdout}{stderr}",
        tool.display(),
        tool_version(tool).map_or("?".into(), |(a, b)| format!("{a}.{b}")),
    );
    let passed = stdout.lines().filter(|l| l.starts_with("INFO ")).count();
    let bad: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("INFO ")).collect();
    assert!(
        out.status.success() && bad.is_empty() && passed == documents,
        "kubernetes-validate against {version}: {passed} of {documents} documents passed\n{stdout}{stderr}"
    );
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let manifests = rendered_manifests();
    let dir = std::env::temp_dir().join(format!("xtask-k8s-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    let mut count = 0;
    for (service, text) in &manifests {
        let path = dir.join(format!("{service}.yaml"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
        count += documents(text).len();
    }

    match which::which("kubernetes-validate") {
        // A release validates up to the Kubernetes version it is numbered
        // after, and back to the test cluster's.
        Ok(tool) => match tool_version(&tool) {
            Some((major, minor)) => {
                validate(&tool, CLUSTER_VERSION, &files, count);
                validate(&tool, &format!("{major}.{minor}.0"), &files, count);
            }
            None => panic!("{}: no version from --version", tool.display()),
        },
        Err(_) => missing(
            "kubernetes-validate is not on PATH (python3 -m pip install kubernetes-validate)",
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
