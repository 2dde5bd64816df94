//! What `doctor` judges, gathered: the env file and the files it names
//! (mode, owner, git), the runtime's containers or pods and the SHA-256 of
//! each secret file inside them (`docker exec` / `kubectl exec`, in
//! parallel), and the Kubernetes rights (`kubectl auth can-i`). Every failure
//! is a fact for [`super`]'s evaluation, never an abort.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::Path,
    sync::Mutex,
};

use anyhow::Result;
use serde_json::Value;

use super::{ContainerFacts, ExecResult, Expected, FileFacts, PARALLEL, RuntimeFacts};
use crate::{
    disk::fsutil,
    edit::stackfile,
    model::manifest::{BackendKind, Kind},
    plan::resolve,
    session::Session,
    store::{Delivery, Probe},
    tools::docker::Docker,
    tools::git,
    tools::kube::{self, Kubectl},
    tools::runner,
};

/// The env file and the files its file secrets name.
pub fn files(s: &Session) -> Vec<FileFacts> {
    let root = &s.root;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let secrets_dir = root.join("secrets");
    let Ok((path, shown)) = resolve::locate(root, &s.env) else {
        return Vec::new();
    };
    let env_place = match &s.env.env_file {
        Some(p) => p.display().to_string(),
        None => format!("secrets/{}.env", s.env.name),
    };
    let in_place = path == root.join(&env_place);
    let mut files = vec![file_facts(
        root,
        &path,
        &shown,
        "env file".into(),
        me,
        in_place,
        env_place,
    )];
    if !path.exists() {
        files[0].unreadable = Some("it does not exist".into());
        return files;
    }
    // The file secrets' paths, as resolve reads them (relative to the env file's folder).
    let Ok((file, _)) = resolve::load_env_file(root, &s.env) else {
        return files;
    };
    let base = path.parent().unwrap_or(root).to_path_buf();
    for spec in s.manifest.secrets_for(&s.env.name) {
        if spec.kind != Kind::File {
            continue;
        }
        let Some(entry) = file.get(&spec.env_key()) else {
            continue;
        };
        let Some(rel) = entry
            .value
            .expose_str()
            .filter(|v| resolve::plausible_path(v))
        else {
            continue; // an inline PEM or no path: `values` reports it
        };
        if resolve::inline_pem(entry.value.expose()) {
            continue;
        }
        let p = base.join(rel);
        let shown = match p.strip_prefix(root) {
            Ok(r) if resolve::shown_file(rel, &p) != "a file" => r.display().to_string(),
            _ => format!("named by {}", file.at(&spec.env_key())),
        };
        let inside = std::fs::canonicalize(&p)
            .ok()
            .zip(std::fs::canonicalize(&secrets_dir).ok())
            .is_some_and(|(p, d)| p.starts_with(d));
        files.push(file_facts(
            root,
            &p,
            &shown,
            format!("file secret {}", spec.env_key()),
            me,
            inside,
            "secrets/".into(),
        ));
    }
    files
}

fn file_facts(
    root: &Path,
    path: &Path,
    shown: &str,
    role: String,
    me: u32,
    in_place: bool,
    belongs: String,
) -> FileFacts {
    let mut refused = Vec::new();
    if let Err(e) = fsutil::refuse_symlink(path, shown) {
        refused.push(format!("{e:#}"));
    }
    let meta = std::fs::metadata(path);
    if meta.is_ok()
        && let Err(e) = fsutil::check_private(path, shown)
    {
        refused.push(format!("{e:#}"));
    }
    let unreadable = match std::fs::File::open(path) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    FileFacts {
        shown: shown.to_string(),
        role,
        path: path.to_path_buf(),
        refused,
        owner: meta.map(|m| m.uid()).map_err(|e| e.to_string()),
        me,
        unreadable,
        tracked: git::is_tracked(root, path).ok().flatten(),
        in_place,
        belongs,
    }
}

/// `kubectl auth can-i` for every verb the tool needs ([`kube::NEEDED`]),
/// in the environment's namespace and context.
pub fn k8s_can_i(s: &Session) -> Vec<Probe> {
    let kubectl = match kube::settings(&s.manifest.project, &s.env).and_then(|k| Kubectl::new(&k)) {
        Ok(k) => k,
        Err(e) => {
            return vec![Probe::Allowed {
                what: "kubernetes".into(),
                needs: Vec::new(),
                has: Err(format!("{e:#}")),
            }];
        }
    };
    let asks: Vec<(&str, &str)> = kube::NEEDED
        .iter()
        .flat_map(|(res, verbs)| verbs.iter().map(move |v| (*res, *v)))
        .collect();
    let answers: Mutex<BTreeMap<(String, String), std::result::Result<bool, String>>> =
        Mutex::new(BTreeMap::new());
    runner::parallel(
        &asks,
        PARALLEL * 2,
        |(r, v)| format!("{v} {r}"),
        |(res, verb)| {
            let a = kubectl
                .output(&["auth", "can-i", verb, res])
                .map_err(|e| format!("{e:#}"))
                .and_then(|o| match o.stdout.trim() {
                    "yes" => Ok(true),
                    "no" => Ok(false),
                    _ => Err(format!(
                        "{:#}",
                        kube::diagnose(&kubectl.namespace, "auth can-i", &o.stderr)
                    )),
                });
            if let Ok(mut m) = answers.lock() {
                m.insert((res.to_string(), verb.to_string()), a);
            }
            Ok(())
        },
    );
    let answers = answers.into_inner().unwrap_or_default();
    kube::NEEDED
        .iter()
        .map(|(res, verbs)| {
            let mut has = Ok(Vec::new());
            for v in *verbs {
                match answers.get(&(res.to_string(), v.to_string())) {
                    Some(Ok(true)) => {
                        if let Ok(h) = &mut has {
                            h.push(v.to_string());
                        }
                    }
                    Some(Ok(false)) => {}
                    Some(Err(e)) => has = Err(e.clone()),
                    None => has = Err("not asked".into()),
                }
            }
            Probe::Allowed {
                what: format!("kubectl auth can-i {res} (namespace {})", kubectl.namespace),
                needs: verbs.iter().map(|v| v.to_string()).collect(),
                has,
            }
        })
        .collect()
}

/// The running containers of the environment and what each should mount.
pub fn runtime(s: &Session) -> RuntimeFacts {
    let rt = s.env.runtime;
    let stack = format!("{}-{}", s.manifest.project, s.env.name);
    let mut facts = RuntimeFacts {
        runtime: rt.name().to_string(),
        ..RuntimeFacts::default()
    };
    if let Ok(Delivery::Reader(_)) = s.store.delivery() {
        facts.skipped = Some(format!(
            "the services read the {} store at run time (delivery = \"reader\"): they mount no copy to compare",
            s.store.kind()
        ));
        return facts;
    }
    let gathered = match rt {
        BackendKind::Compose => {
            facts.place = format!("compose project {stack}");
            docker_containers(s, &stack, false, &mut facts)
        }
        BackendKind::Swarm => {
            facts.place = format!("stack {stack}");
            docker_containers(s, &stack, true, &mut facts)
        }
        BackendKind::K8s => k8s_pods(s, &mut facts),
        _ => Ok(()),
    };
    if let Err(e) = gathered {
        facts.error = Some(format!("{e:#}"));
    }
    facts
}

/// Service → what it should mount, from the manifest's `services` and the
/// compose or stack file's mounts (`/run/secrets/<target>`).
fn stack_expectations(s: &Session, file: &Path) -> Result<BTreeMap<String, Vec<Expected>>> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(s.root.join(file))
        .map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
    let stack = stackfile::parse(&text).map_err(|e| anyhow::anyhow!("in {shown}: {e:#}"))?;
    let specs = s.manifest.secrets_for(&s.env.name);
    let mut out: BTreeMap<String, Vec<Expected>> = BTreeMap::new();
    let services: BTreeSet<&String> = stack
        .services
        .keys()
        .chain(specs.iter().flat_map(|sp| sp.services.iter()))
        .collect();
    for svc in services {
        let mounted = stack.services.get(svc).cloned().unwrap_or_default();
        let list = out.entry(svc.clone()).or_default();
        for sp in &specs {
            if !mounted.contains(&sp.name) && !sp.services.contains(svc) {
                continue;
            }
            list.push(Expected {
                secret: sp.name.clone(),
                path: Some(stack.mount_path(svc, &sp.name)),
                kept: sp.kept_by.contains(svc),
            });
        }
    }
    Ok(out)
}

/// Compose containers (project label) or this node's swarm tasks (stack
/// label), each hashed with one `docker exec`; swarm tasks on other nodes
/// are named.
fn docker_containers(
    s: &Session,
    stack: &str,
    swarm: bool,
    facts: &mut RuntimeFacts,
) -> Result<()> {
    let file = if swarm {
        crate::runtime::swarm::stack_file(&s.env)?
    } else {
        crate::store::compose::settings(&s.env)?.file
    };
    let expect = stack_expectations(s, &file)?;
    let docker = Docker::new()?;
    docker.ping()?;
    let label = if swarm {
        format!("label=com.docker.stack.namespace={stack}")
    } else {
        format!("label=com.docker.compose.project={stack}")
    };
    let ids = docker.read(&["ps", "-q", "--filter", &label], "")?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let mut local_tasks = BTreeSet::new();
    let mut list = Vec::new();
    if !ids.is_empty() {
        let mut args = vec![
            "inspect",
            "--format",
            "{{.Id}}|{{.Name}}|{{index .Config.Labels \"com.docker.compose.service\"}}|{{index .Config.Labels \"com.docker.swarm.service.name\"}}|{{index .Config.Labels \"com.docker.swarm.task.id\"}}",
        ];
        args.extend(ids.iter());
        for line in docker.read(&args, "")?.lines() {
            let f: Vec<&str> = line.split('|').collect();
            let [id, name, compose_svc, swarm_svc, task] = f[..] else {
                continue;
            };
            let service = if swarm {
                swarm_svc
                    .strip_prefix(&format!("{stack}_"))
                    .unwrap_or(swarm_svc)
            } else {
                compose_svc
            };
            local_tasks.insert(task.to_string());
            let what = if swarm { "task" } else { "container" };
            list.push((
                id.to_string(),
                format!("{what} {}", name.trim_start_matches('/')),
                service.to_string(),
            ));
        }
    }
    if swarm {
        let tasks = docker.read(
            &[
                "stack",
                "ps",
                stack,
                "--no-trunc",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.ID}}|{{.Name}}|{{.Node}}",
            ],
            "",
        );
        match tasks {
            Ok(t) => {
                for line in t.lines() {
                    let f: Vec<&str> = line.split('|').collect();
                    if let [id, name, node] = f[..]
                        && !local_tasks.contains(id)
                    {
                        facts.elsewhere.push(format!("task {name} (node {node})"));
                    }
                }
            }
            // No stack at all: nothing runs elsewhere either.
            Err(e) if format!("{e:#}").contains("nothing found in stack") => {}
            Err(e) => return Err(e),
        }
    }
    let done: Mutex<Vec<ContainerFacts>> = Mutex::new(Vec::new());
    runner::parallel(
        &list,
        PARALLEL,
        |(_, n, _)| n.clone(),
        |(id, name, service)| {
            let expected = expect.get(service).cloned().unwrap_or_default();
            let paths: Vec<&str> = expected.iter().filter_map(|e| e.path.as_deref()).collect();
            let exec = if paths.is_empty() {
                Ok(ExecResult {
                    code: Some(0),
                    stdout: String::new(),
                    stderr: String::new(),
                })
            } else {
                let mut args = vec!["exec", id.as_str(), "sha256sum"];
                args.extend(paths.iter().copied());
                docker
                    .tool
                    .output(&args, None)
                    .map(|o| ExecResult {
                        code: o.status.code(),
                        stdout: o.stdout,
                        stderr: o.stderr,
                    })
                    .map_err(|e| format!("{e:#}"))
            };
            if let Ok(mut d) = done.lock() {
                d.push(ContainerFacts {
                    name: name.clone(),
                    service: service.clone(),
                    expected,
                    exec,
                });
            }
            Ok(())
        },
    );
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by(|a, b| a.name.cmp(&b.name));
    facts.containers = done;
    Ok(())
}

/// Pure: what one container of a pod mounts, from the pod spec: secret
/// name → path, through `volumeMounts` and secret or projected volumes.
/// `secret_of` maps a Secret's object name to the manifest's secret.
pub fn pod_mounts(
    pod_spec: &Value,
    container: &Value,
    secret_of: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let volumes = pod_spec["volumes"].as_array().cloned().unwrap_or_default();
    for vm in container["volumeMounts"].as_array().into_iter().flatten() {
        let (Some(vol), Some(mount)) = (vm["name"].as_str(), vm["mountPath"].as_str()) else {
            continue;
        };
        let sub = vm["subPath"].as_str().filter(|s| !s.is_empty());
        let Some(v) = volumes.iter().find(|v| v["name"] == vol) else {
            continue;
        };
        let mut sources: Vec<(String, Option<&Vec<Value>>)> = Vec::new();
        if let Some(n) = v.pointer("/secret/secretName").and_then(Value::as_str) {
            sources.push((
                n.to_string(),
                v.pointer("/secret/items").and_then(Value::as_array),
            ));
        }
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = src.pointer("/secret/name").and_then(Value::as_str) {
                sources.push((
                    n.to_string(),
                    src.pointer("/secret/items").and_then(Value::as_array),
                ));
            }
        }
        for (object, items) in sources {
            let Some(secret) = secret_of(&object) else {
                continue;
            };
            // One key named like the secret; items may put it elsewhere.
            let file = match items {
                Some(items) => match items.iter().find(|i| i["key"] == secret.as_str()) {
                    Some(i) => i["path"].as_str().unwrap_or(&secret).to_string(),
                    None => continue,
                },
                None => secret.clone(),
            };
            let path = match sub {
                Some(sp) if sp == file => mount.to_string(),
                Some(_) => continue,
                None => format!("{}/{file}", mount.trim_end_matches('/')),
            };
            out.insert(secret, path);
        }
    }
    out
}

/// The running pods of the workloads in the manifests folder, each of their
/// running containers hashed with one `kubectl exec`.
fn k8s_pods(s: &Session, facts: &mut RuntimeFacts) -> Result<()> {
    let settings = kube::settings(&s.manifest.project, &s.env)?;
    let kubectl = Kubectl::new(&settings)?;
    facts.place = format!("namespace {}", settings.namespace);
    let dir = s.root.join(&settings.manifests);
    let mut wanted = BTreeSet::new();
    for e in std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", settings.manifests))?
    {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let text = std::fs::read_to_string(&p)?;
            for w in crate::runtime::k8s::workloads(&text)? {
                wanted.insert((w.kind, w.name));
            }
        }
    }
    let list: Value = serde_json::from_str(&kubectl.read(&[
        "get",
        "deployments,statefulsets,daemonsets,pods",
        "-o",
        "json",
    ])?)?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let pods: Vec<Value> = items
        .iter()
        .filter(|i| i["kind"] == "Pod")
        .cloned()
        .collect();
    let specs = s.manifest.secrets_for(&s.env.name);
    let project = s.manifest.project.clone();
    let env = s.env.name.clone();
    let secret_of = |object: &str| -> Option<String> {
        let (base, v) = object.rsplit_once("-v")?;
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        specs
            .iter()
            .find(|sp| {
                let n = crate::store::k8s::object_name(&project, &env, &sp.name, 0);
                n.strip_suffix("-v0") == Some(base)
            })
            .map(|sp| sp.name.clone())
    };
    let mut list = Vec::new();
    for w in &items {
        let kind = w["kind"].as_str().unwrap_or_default();
        let name = w
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !wanted.contains(&(kind.to_string(), name.to_string())) {
            continue;
        }
        for p in crate::runtime::k8s::pods_of(w, &pods) {
            if p.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
                continue;
            }
            let pod = p
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let running: BTreeSet<&str> = p
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|c| c.pointer("/state/running").is_some())
                .filter_map(|c| c["name"].as_str())
                .collect();
            for c in p
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let cname = c["name"].as_str().unwrap_or_default();
                if !running.contains(cname) {
                    continue;
                }
                let mounts = pod_mounts(&p["spec"], c, &secret_of);
                let mut expected: Vec<Expected> = Vec::new();
                for sp in &specs {
                    let path = mounts.get(&sp.name).cloned();
                    if path.is_none() && !sp.services.iter().any(|x| x == name) {
                        continue;
                    }
                    expected.push(Expected {
                        secret: sp.name.clone(),
                        path,
                        kept: sp.kept_by.iter().any(|x| x == name),
                    });
                }
                list.push((
                    pod.to_string(),
                    cname.to_string(),
                    name.to_string(),
                    expected,
                ));
            }
        }
    }
    let done: Mutex<Vec<ContainerFacts>> = Mutex::new(Vec::new());
    runner::parallel(
        &list,
        PARALLEL,
        |(p, c, _, _)| format!("{p}/{c}"),
        |(pod, cname, workload, expected)| {
            let paths: Vec<&str> = expected.iter().filter_map(|e| e.path.as_deref()).collect();
            let exec = if paths.is_empty() {
                Ok(ExecResult {
                    code: Some(0),
                    stdout: String::new(),
                    stderr: String::new(),
                })
            } else {
                let mut args = vec![
                    "exec",
                    pod.as_str(),
                    "-c",
                    cname.as_str(),
                    "--",
                    "sha256sum",
                ];
                args.extend(paths.iter().copied());
                kubectl
                    .output(&args)
                    .map(|o| ExecResult {
                        code: o.status.code(),
                        stdout: o.stdout,
                        stderr: o.stderr,
                    })
                    .map_err(|e| format!("{e:#}"))
            };
            if let Ok(mut d) = done.lock() {
                d.push(ContainerFacts {
                    name: format!("pod {pod}/{cname}"),
                    service: workload.clone(),
                    expected: expected.clone(),
                    exec,
                });
            }
            Ok(())
        },
    );
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by(|a, b| a.name.cmp(&b.name));
    facts.containers = done;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_mounts_follow_projected_items_and_plain_secret_volumes() {
        let spec = serde_json::json!({
            "volumes": [
                {"name": "s", "projected": {"sources": [
                    {"secret": {"name": "p-e-jwt-secret-v2", "items": [{"key": "jwt_secret", "path": "jwt"}]}},
                    {"secret": {"name": "other"}}
                ]}},
                {"name": "k", "secret": {"secretName": "p-e-api-key-v1"}}
            ]
        });
        let c = serde_json::json!({"volumeMounts": [
            {"name": "s", "mountPath": "/run/secrets"},
            {"name": "k", "mountPath": "/etc/key/api_key", "subPath": "api_key"}
        ]});
        let of = |o: &str| match o {
            "p-e-jwt-secret-v2" => Some("jwt_secret".to_string()),
            "p-e-api-key-v1" => Some("api_key".to_string()),
            _ => None,
        };
        let m = pod_mounts(&spec, &c, &of);
        assert_eq!(m["jwt_secret"], "/run/secrets/jwt");
        assert_eq!(m["api_key"], "/etc/key/api_key");
        assert_eq!(m.len(), 2);
    }
}
