//! Kubernetes running the manifests in `deploy/k8s/` in the environment's
//! namespace. `deploy` renders them with `${XTASK_SECRET_<NAME>}` set to each
//! secret's current versioned Secret (plus `XTASK_ENV`, `XTASK_PROJECT`,
//! `XTASK_NAMESPACE` and the operator's own variables, such as image names),
//! applies them server-side on stdin, and waits: it polls the workloads and
//! their pods, fails early naming the workload and the pod's reason
//! (ImagePullBackOff, CrashLoopBackOff, a missing Secret), and is done when
//! every workload has rolled out by the rules of `kubectl rollout status`.
//! Converged also means that no old pod is still
//! terminating: through its `preStop` and grace period it keeps serving with
//! the credentials it started with, so a rotation's after hooks (which revoke
//! the old credential) wait for it to be gone.
//!
//! Versioned Secrets rather than a checksum annotation: the pod template names
//! the exact Secret it reads, so Kubernetes itself rolls the workload, a failed
//! rollout keeps the old pods on the old Secret (which stays until nothing uses
//! it), and `kubectl rollout undo` returns to a version that still exists.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

mod reader;

use super::{DeployOptions, Poll, Runtime, Scope};
use crate::{
    edit::stackfile,
    model::manifest::{BackendKind, Manifest},
    plan::Users,
    tools::kube::{self, Kubectl},
};

pub(crate) struct K8sRuntime {
    sink: crate::sink::Shared,
    kubectl: Kubectl,
    root: PathBuf,
    manifest: Manifest,
    env: String,
    settings: kube::Settings,
}

/// A workload in the manifests and the secrets its pods mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// Its `metadata.name`.
    pub name: String,
    /// Manifest names, from `${XTASK_SECRET_<NAME>...}` references.
    pub secrets: Vec<String>,
    /// Secret names written literally: deploy could not point them at a version.
    pub literal: Vec<String>,
}

pub(super) const WORKLOAD_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

/// Every Secret name a pod spec refers to: volumes (secret, projected),
/// `env.valueFrom.secretKeyRef` and `envFrom.secretRef`.
pub fn pod_secret_refs(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        out.extend(s(vol, "/secret/secretName"));
        for src in vol
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(s(src, "/secret/name"));
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                out.extend(s(e, "/valueFrom/secretKeyRef/name"));
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                out.extend(s(e, "/secretRef/name"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `${XTASK_SECRET_POSTGRES_PASSWORD:?...}` → `postgres_password`.
pub(super) fn secret_of_reference(name: &str) -> Option<String> {
    let rest = name.trim().strip_prefix("${XTASK_SECRET_")?;
    let len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    Some(rest[..len].to_ascii_lowercase())
}

/// The workloads of one manifest file (several YAML documents).
pub fn workloads(text: &str) -> Result<Vec<Workload>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = serde_norway::Value::deserialize(doc)
            .map_err(|e| anyhow::anyhow!("not valid YAML: {e}"))?;
        let v: Value = serde_json::to_value(&v).context("YAML that JSON cannot hold")?;
        let kind = v["kind"].as_str().unwrap_or_default();
        if !WORKLOAD_KINDS.contains(&kind) {
            continue;
        }
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let refs = pod_secret_refs(&v["spec"]["template"]["spec"]);
        let (mut secrets, mut literal) = (Vec::new(), Vec::new());
        for r in refs {
            match secret_of_reference(&r) {
                Some(s) => secrets.push(s),
                None => literal.push(r),
            }
        }
        out.push(Workload {
            kind: kind.to_string(),
            name: name.to_string(),
            secrets,
            literal,
        });
    }
    Ok(out)
}

/// Every disagreement between the manifests and deploy/secrets.toml.
pub fn check_workloads(
    manifest: &Manifest,
    dir: &str,
    all: &[(String, Vec<Workload>)],
) -> Vec<String> {
    let envs = super::envs_of(manifest, BackendKind::K8s);
    let mut out = Vec::new();
    let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, ws) in all {
        for w in ws {
            for l in &w.literal {
                out.push(format!(
                    "{file}: {} {} mounts the Secret {l:?} by a fixed name; name it `${{XTASK_SECRET_<NAME>:?set by cargo xtask deploy}}` so deploy points it at the current version",
                    w.kind.to_ascii_lowercase(), w.name
                ));
            }
            // A kept_by workload mounts `<name>_kept` (the version it runs).
            let kept = |r: &String| {
                r.strip_suffix("_kept")
                    .filter(|b| {
                        manifest
                            .secrets
                            .iter()
                            .any(|s| s.name == *b && s.kept_by.contains(&w.name))
                    })
                    .map_or_else(|| r.clone(), str::to_string)
            };
            uses.entry(w.name.clone())
                .or_default()
                .extend(w.secrets.iter().map(kept));
        }
    }
    let defined: BTreeSet<String> = uses.values().flatten().cloned().collect();
    out.extend(super::cross_check(manifest, &envs, dir, &uses, &defined));
    out.into_iter()
        .filter(|p| !p.contains("is missing from the top-level secrets"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Where one workload stands, from its object and the namespace's pods.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Status {
    /// The rollout is done, by the rules of `kubectl rollout status`.
    pub converged: bool,
    /// Where the rollout is, for progress lines.
    pub progress: String,
    /// Why it cannot converge, when it cannot.
    pub failure: Option<String>,
    /// A pod that has been creating for long: its events may say why.
    pub stuck_pod: Option<String>,
}

fn num(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// Pods the workload's selector matches, not being deleted.
pub fn pods_of<'a>(w: &Value, pods: &'a [Value]) -> Vec<&'a Value> {
    let Some(sel) = w
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| {
            sel.iter()
                .all(|(k, v)| p["metadata"]["labels"].get(k) == Some(v))
        })
        .collect()
}

/// Pure: the workload's pods that are being deleted but still run. A
/// terminating pod keeps serving through its `preStop` and grace period, with
/// the credentials it started with, so a rollout has not converged (and an old
/// credential may not be revoked) until they are gone.
pub fn terminating_of<'a>(w: &Value, pods: &'a [Value]) -> Vec<&'a str> {
    let Some(sel) = w
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_some())
        .filter(|p| !matches!(text(p, "/status/phase"), "Succeeded" | "Failed"))
        .filter(|p| {
            sel.iter()
                .all(|(k, v)| p["metadata"]["labels"].get(k) == Some(v))
        })
        .map(|p| text(p, "/metadata/name"))
        .collect()
}

/// Container states that will not fix themselves.
const FATAL: [&str; 8] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Pure: one workload's rollout state, by the rules `kubectl rollout status`
/// uses, plus the first pod whose containers cannot start. `age_of` gives how
/// long a pod has existed.
pub(crate) fn workload_status(
    w: &Value,
    pods: &[Value],
    age_of: &dyn Fn(&Value) -> Duration,
) -> Status {
    let kind = text(w, "/kind").to_ascii_lowercase();
    let id = format!("{kind}/{}", text(w, "/metadata/name"));
    let want = w
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let observed = num(w, "/status/observedGeneration") >= num(w, "/metadata/generation");
    let (converged, progress) = match kind.as_str() {
        "statefulset" => {
            let ready = num(w, "/status/readyReplicas");
            let updated = num(w, "/status/updatedReplicas");
            let same = text(w, "/status/updateRevision") == text(w, "/status/currentRevision");
            (
                observed && ready >= want && updated >= want && same,
                format!("{id} {ready}/{want} ready"),
            )
        }
        "daemonset" => {
            let want = num(w, "/status/desiredNumberScheduled");
            let updated = num(w, "/status/updatedNumberScheduled");
            let avail = num(w, "/status/numberAvailable");
            (
                observed && updated >= want && avail >= want,
                format!("{id} {avail}/{want} available"),
            )
        }
        _ => {
            let updated = num(w, "/status/updatedReplicas");
            let total = num(w, "/status/replicas");
            let avail = num(w, "/status/availableReplicas");
            let ok = observed && updated >= want && total <= updated && avail >= updated;
            (
                ok,
                format!("{id} {updated}/{want} updated, {avail} available"),
            )
        }
    };
    let mut status = Status {
        converged,
        progress,
        failure: None,
        stuck_pod: None,
    };
    for c in w
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if text(c, "/reason") == "ProgressDeadlineExceeded" {
            status.failure = Some(format!(
                "{id}: the rollout exceeded its progress deadline ({})",
                text(c, "/message")
            ));
        }
    }
    for p in pods_of(w, pods) {
        let pod = text(p, "/metadata/name");
        for c in p
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let reason = text(c, "/state/waiting/reason");
            if FATAL.contains(&reason) && status.failure.is_none() {
                let msg = text(c, "/state/waiting/message");
                let msg = if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                };
                status.failure = Some(format!(
                    "{id}: pod {pod} cannot start its container {}: {reason}{msg}",
                    text(c, "/name")
                ));
            }
        }
        let creating = text(p, "/status/phase") == "Pending";
        if creating && age_of(p) > Duration::from_secs(15) && status.stuck_pod.is_none() {
            status.stuck_pod = Some(pod.to_string());
        }
    }
    status
}

/// Pure: Secret name → the workloads and pods that use it. A ReplicaSet counts
/// while it has pods (a scaled-down one only keeps a rollback possible).
pub fn secret_users(list: &Value) -> Users {
    let mut out = Users::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let kind = text(item, "/kind");
        let name = text(item, "/metadata/name");
        let spec = match kind {
            "Pod" => &item["spec"],
            "ReplicaSet"
                if num(item, "/spec/replicas") == 0 && num(item, "/status/replicas") == 0 =>
            {
                continue;
            }
            _ => &item["spec"]["template"]["spec"],
        };
        for s in pod_secret_refs(spec) {
            let who = format!("{}/{name}", kind.to_ascii_lowercase());
            let users = out.entry(s).or_default();
            if !users.contains(&who) {
                users.push(who);
            }
        }
    }
    out
}

/// Pure: what runs, from one `kubectl get pods,replicasets,deployments,
/// statefulsets,daemonsets -o json`: each workload's template (what its next
/// pods get), each ReplicaSet that has pods, and each pod that is not being
/// deleted nor has ended, with the Secrets it mounts. A pod's service is its
/// workload (through its ReplicaSet for a Deployment), else its
/// `app.kubernetes.io/name` label.
pub fn running_of(list: &Value) -> Vec<super::drift::Running> {
    use super::drift::{Mounted, Running};
    let items: Vec<&Value> = list["items"].as_array().into_iter().flatten().collect();
    let owner = |v: &Value| -> Option<(String, String)> {
        let o = v
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)?
            .first()?;
        Some((text(o, "/kind").to_string(), text(o, "/name").to_string()))
    };
    // ReplicaSet → its Deployment.
    let rs_owner: BTreeMap<String, String> = items
        .iter()
        .filter(|i| text(i, "/kind") == "ReplicaSet")
        .filter_map(|i| Some((text(i, "/metadata/name").to_string(), owner(i)?.1)))
        .collect();
    let mut out = Vec::new();
    for item in items {
        let kind = text(item, "/kind");
        let name = text(item, "/metadata/name");
        let (spec, service) = match kind {
            "Pod" => {
                let phase = text(item, "/status/phase");
                if item.pointer("/metadata/deletionTimestamp").is_some()
                    || matches!(phase, "Succeeded" | "Failed")
                {
                    continue;
                }
                let service = match owner(item) {
                    Some((k, rs)) if k == "ReplicaSet" => rs_owner.get(&rs).cloned().unwrap_or(rs),
                    Some((_, n)) => n,
                    None => match text(item, "/metadata/labels/app.kubernetes.io~1name") {
                        "" => name.to_string(),
                        l => l.to_string(),
                    },
                };
                (&item["spec"], service)
            }
            "ReplicaSet" => {
                if num(item, "/spec/replicas") == 0 && num(item, "/status/replicas") == 0 {
                    continue;
                }
                let service = rs_owner.get(name).cloned().unwrap_or(name.to_string());
                (&item["spec"]["template"]["spec"], service)
            }
            _ => (&item["spec"]["template"]["spec"], name.to_string()),
        };
        out.push(Running {
            who: format!("{}/{name}", kind.to_ascii_lowercase()),
            service,
            mounts: pod_secret_refs(spec).into_iter().map(Mounted::Id).collect(),
        });
    }
    out
}

impl K8sRuntime {
    pub(crate) fn new(s: &Scope) -> Result<K8sRuntime> {
        let settings = kube::settings(&s.manifest.project, s.env)?;
        Ok(K8sRuntime {
            sink: s.sink.clone(),
            kubectl: Kubectl::new(&settings)?,
            root: s.root.to_path_buf(),
            manifest: s.manifest.clone(),
            env: s.env.name.clone(),
            settings,
        })
    }

    /// The manifest files, sorted, with their text.
    fn load(&self) -> Result<Vec<(String, String)>> {
        let dir = self.root.join(&self.settings.manifests);
        let rd = std::fs::read_dir(&dir).with_context(|| {
            format!(
                "cannot read {}; the k8s runtime applies the manifests there (set `manifests` in [environments.{}.k8s])",
                self.settings.manifests, self.env
            )
        })?;
        let mut files = Vec::new();
        for e in rd {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                let shown = format!(
                    "{}/{}",
                    self.settings.manifests,
                    p.file_name().unwrap_or_default().to_string_lossy()
                );
                let text =
                    std::fs::read_to_string(&p).with_context(|| format!("cannot read {shown}"))?;
                files.push((shown, text));
            }
        }
        files.sort();
        if files.is_empty() {
            bail!(
                "{} holds no .yaml manifests to deploy",
                self.settings.manifests
            );
        }
        Ok(files)
    }

    fn parsed(&self, files: &[(String, String)]) -> Result<Vec<(String, Vec<Workload>)>> {
        files
            .iter()
            .map(|(f, t)| Ok((f.clone(), workloads(t).with_context(|| format!("in {f}"))?)))
            .collect()
    }

    fn vars(&self, current: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = std::env::vars().collect();
        for (s, id) in current {
            vars.insert(
                format!("XTASK_SECRET_{}", s.to_ascii_uppercase()),
                id.clone(),
            );
        }
        vars.extend(self.kept_vars(current));
        vars.insert("XTASK_ENV".into(), self.env.clone());
        vars.insert("XTASK_PROJECT".into(), self.manifest.project.clone());
        vars.insert("XTASK_NAMESPACE".into(), self.kubectl.namespace.clone());
        vars
    }

    /// `XTASK_SECRET_<NAME>_KEPT` for each secret with `kept_by`: the version
    /// the kept_by workloads mount now (their live pod template), else the
    /// current one (not deployed yet). Those servers keep their own copy of
    /// the credential and rotate it through a hook, so a rotation must not
    /// restart them (a database, a cache with one writer), as under Swarm.
    fn kept_vars(&self, current: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let kept: Vec<_> = self
            .manifest
            .secrets
            .iter()
            .filter(|s| !s.kept_by.is_empty())
            .collect();
        let mut out = BTreeMap::new();
        if kept.is_empty() {
            return out;
        }
        // One call; a missing namespace or workload keeps nothing.
        let live: BTreeMap<String, Vec<String>> = self
            .kubectl
            .read(&["get", "deployments,statefulsets,daemonsets", "-o", "json"])
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|w| {
                (
                    text(w, "/metadata/name").to_string(),
                    pod_secret_refs(&w["spec"]["template"]["spec"]),
                )
            })
            .collect();
        for spec in kept {
            let Some(now) = current.get(&spec.name) else {
                continue;
            };
            let name =
                crate::store::k8s::object_name(&self.manifest.project, &self.env, &spec.name, 0);
            let prefix = name.trim_end_matches('0');
            let used = spec
                .kept_by
                .iter()
                .filter_map(|w| live.get(w))
                .flatten()
                .find(|r| {
                    r.strip_prefix(prefix)
                        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                });
            out.insert(
                format!("XTASK_SECRET_{}_KEPT", spec.name.to_ascii_uppercase()),
                used.unwrap_or(now).clone(),
            );
        }
        out
    }

    /// Polls until every workload rolled out by the rules of `kubectl
    /// rollout status` ([`workload_status`]) and no old pod is left
    /// terminating. (A confirming `kubectl rollout status` a workload, once
    /// the poll said done, only added a third of a second to every deploy:
    /// the poll's rules are those, and stricter.)
    fn wait(
        &self,
        names: &[(String, String)],
        begun: std::time::SystemTime,
        timeout: Duration,
    ) -> Result<()> {
        let ns = &self.kubectl.namespace;
        let hint =
            format!("; see `kubectl -n {ns} get pods` and `kubectl -n {ns} describe` the workload");
        let start = Instant::now();
        super::wait_until(
            &*self.sink,
            &format!("namespace {ns}"),
            timeout,
            Duration::from_millis(250),
            &hint,
            || match self.poll(names, begun)? {
                Poll::Done(_) => Ok(Poll::Done(format!(
                    "namespace {ns}: {} workloads rolled out in {:.1}s",
                    names.len(),
                    start.elapsed().as_secs_f64()
                ))),
                waiting => Ok(waiting),
            },
        )?;
        Ok(())
    }

    /// One look at the workloads and their pods (one kubectl call). Only pods
    /// created since the apply (`begun`) count as this deploy's failures: an
    /// older failing pod is left from an earlier deploy and is being replaced.
    fn poll(&self, names: &[(String, String)], begun: std::time::SystemTime) -> Result<Poll> {
        let ns = &self.kubectl.namespace;
        let list: Value = serde_json::from_str(&self.kubectl.read(&[
            "get",
            "deployments,statefulsets,daemonsets,pods",
            "-o",
            "json",
        ])?)
        .context("kubectl get gave no JSON")?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let created =
            |p: &Value| crate::model::time::parse_rfc3339(text(p, "/metadata/creationTimestamp"));
        // Creation times have whole seconds: a second of slack.
        let since = begun - Duration::from_secs(1);
        let pods: Vec<Value> = items
            .iter()
            .filter(|i| i["kind"] == "Pod" && created(i).is_some_and(|c| c >= since))
            .cloned()
            .collect();
        let all_pods: Vec<Value> = items
            .iter()
            .filter(|i| i["kind"] == "Pod")
            .cloned()
            .collect();
        let now = std::time::SystemTime::now();
        let age_of = |p: &Value| {
            created(p)
                .and_then(|c| now.duration_since(c).ok())
                .unwrap_or_default()
        };
        let mut waiting = Vec::new();
        for (kind, name) in names {
            let id = format!("{}/{name}", kind.to_ascii_lowercase());
            let Some(w) = items
                .iter()
                .find(|i| text(i, "/kind") == kind && text(i, "/metadata/name") == name)
            else {
                waiting.push(format!("{id} not created yet"));
                continue;
            };
            let s = workload_status(w, &pods, &age_of);
            if let Some(f) = s.failure {
                bail!(
                    "{f}. The old pods keep serving; fix it and deploy again, or undo with `kubectl -n {ns} rollout undo {id}`"
                );
            }
            if let Some(pod) = s.stuck_pod
                && let Some(why) = self.mount_failure(&pod)
            {
                bail!(
                    "{id}: pod {pod} cannot start: {why}. The old pods keep serving; run `cargo xtask setup-secrets {}` and deploy again",
                    self.env
                );
            }
            if !s.converged {
                waiting.push(s.progress);
                continue;
            }
            let leaving = terminating_of(w, &all_pods);
            if !leaving.is_empty() {
                waiting.push(format!(
                    "{id}: {} old pod(s) still terminating ({})",
                    leaving.len(),
                    leaving.join(", ")
                ));
            }
        }
        Ok(if waiting.is_empty() {
            Poll::Done(String::new())
        } else {
            Poll::Waiting(waiting.join(", "))
        })
    }

    /// The documents deploy applies (every manifest checked, rendered for
    /// reader delivery if asked, interpolated) and the workloads to wait for.
    fn render(
        &self,
        current: &BTreeMap<String, String>,
        opts: &DeployOptions,
    ) -> Result<(String, Vec<(String, String)>)> {
        let files = self.load()?;
        let parsed = self.parsed(&files)?;
        let problems = self.check()?;
        if !problems.is_empty() {
            bail!(
                "{} and deploy/secrets.toml disagree:\n  - {}\nfix them (`cargo xtask check`) before deploying",
                self.settings.manifests,
                problems.join("\n  - ")
            );
        }
        let vars = self.vars(current);
        let mut docs = String::new();
        for (f, text) in &files {
            let text = match &opts.reader {
                Some(r) => reader::render(text, f, r)?,
                None => text.clone(),
            };
            let r =
                stackfile::interpolate_checked(&text, &vars).with_context(|| format!("in {f}"))?;
            docs.push_str(&format!("---\n# {f}\n{}\n", r.trim_end()));
        }
        let names = parsed
            .iter()
            .flat_map(|(_, ws)| ws.iter().map(|w| (w.kind.clone(), w.name.clone())))
            .collect();
        Ok((docs, names))
    }

    /// The newest FailedMount event of a pod that has been creating for long.
    fn mount_failure(&self, pod: &str) -> Option<String> {
        let sel = format!("involvedObject.name={pod},reason=FailedMount");
        let msg = self
            .kubectl
            .read(&[
                "get",
                "events",
                "--field-selector",
                &sel,
                "-o",
                "jsonpath={.items[-1:].message}",
            ])
            .ok()?;
        msg.contains("not found").then(|| msg.trim().to_string())
    }
}

impl Runtime for K8sRuntime {
    fn hook_env(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (
                "XTASK_KUBECTL".into(),
                self.kubectl.tool.bin.to_string_lossy().into_owned(),
            ),
            (
                "XTASK_K8S_NAMESPACE".into(),
                self.settings.namespace.clone(),
            ),
        ];
        if let Some(c) = &self.settings.context {
            out.push(("XTASK_K8S_CONTEXT".into(), c.clone()));
        }
        out
    }

    fn check(&self) -> Result<Vec<String>> {
        if !self.root.join(&self.settings.manifests).exists() {
            return Ok(Vec::new());
        }
        let files = self.load()?;
        Ok(check_workloads(
            &self.manifest,
            &self.settings.manifests,
            &self.parsed(&files)?,
        ))
    }

    fn users(&self) -> Result<Option<Users>> {
        let text = self.kubectl.read(&[
            "get",
            "pods,replicasets,deployments,statefulsets,daemonsets",
            "-o",
            "json",
        ])?;
        let list: Value = serde_json::from_str(&text).context("kubectl get gave no JSON")?;
        Ok(Some(secret_users(&list)))
    }

    fn running_versions(&self) -> Result<Vec<super::drift::Running>> {
        let text = self.kubectl.read(&[
            "get",
            "pods,replicasets,deployments,statefulsets,daemonsets",
            "-o",
            "json",
        ])?;
        let list: Value = serde_json::from_str(&text).context("kubectl get gave no JSON")?;
        Ok(running_of(&list))
    }

    fn stop_hint(&self) -> String {
        format!(
            "kubectl -n {} delete -f {}",
            self.kubectl.namespace, self.settings.manifests
        )
    }

    fn prepare(&self, current: &BTreeMap<String, String>, opts: &DeployOptions) -> Result<()> {
        self.render(current, opts).map(|_| ())
    }

    fn deploy(&self, current: &BTreeMap<String, String>, opts: &DeployOptions) -> Result<()> {
        let (docs, names) = self.render(current, opts)?;
        let ns = &self.kubectl.namespace;
        if opts.dry_run {
            self.sink.line(&format!(
                "would run: kubectl apply --server-side --field-manager=cargo-xtask -n {ns} -f - with:\n{docs}"
            ));
            return Ok(());
        }
        let begun = std::time::SystemTime::now();
        // Said before the apply, which prints only once it is done: the
        // rollout starts with it.
        self.sink.line(&format!(
            "namespace {ns}: applying {} (kubectl apply --server-side)",
            self.settings.manifests
        ));
        // A missing namespace fails the apply with its own message (kube::diagnose).
        let applied = self.kubectl.apply(docs.as_bytes())?;
        self.sink.line(applied.trim_end());
        self.wait(&names, begun, opts.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOY: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: x}]
      volumes:
      - name: secrets
        projected:
          sources:
          - secret: {name: "${XTASK_SECRET_DB_PASSWORD:?set by cargo xtask deploy}", items: [{key: db_password, path: db_password}]}
          - secret: {name: fixed-name}
"#;

    #[test]
    fn workloads_and_their_secret_references() {
        let w = workloads(DEPLOY).unwrap();
        assert_eq!(
            w,
            [Workload {
                kind: "Deployment".into(),
                name: "web".into(),
                secrets: vec!["db_password".into()],
                literal: vec!["fixed-name".into()],
            }]
        );
        let m = Manifest::parse("project = \"d\"\n[environments.p]\nbackend = \"k8s\"\n[secrets.db_password]\nkind = \"password\"\nservices = [\"web\", \"db\"]\n").unwrap();
        let p = check_workloads(&m, "deploy/k8s", &[("deploy/k8s/web.yaml".into(), w)]);
        assert!(
            p.iter()
                .any(|x| x.contains("mounts the Secret \"fixed-name\" by a fixed name")),
            "{p:?}"
        );
        assert_eq!(p.len(), 1, "{p:?}");
    }

    fn deployment(generation: i64, observed: i64, updated: i64, total: i64, avail: i64) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total, "availableReplicas": avail}})
    }

    fn pod(name: &str, phase: &str, waiting: Option<(&str, &str)>) -> Value {
        let state = match waiting {
            Some((r, m)) => json!({"waiting": {"reason": r, "message": m}}),
            None => json!({"running": {}}),
        };
        json!({"kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
            "status": {"phase": phase, "containerStatuses": [{"name": "web", "state": state}]}})
    }

    #[test]
    fn rollout_rules_follow_kubectl() {
        let zero = |_: &Value| Duration::ZERO;
        assert!(workload_status(&deployment(2, 2, 2, 2, 2), &[], &zero).converged);
        // Old replicas still around, or the controller has not seen the change.
        assert!(!workload_status(&deployment(2, 2, 2, 3, 2), &[], &zero).converged);
        assert!(!workload_status(&deployment(3, 2, 2, 2, 2), &[], &zero).converged);
        let bad = [pod(
            "web-1",
            "Pending",
            Some(("ErrImageNeverPull", "image \"nope\" is not present")),
        )];
        let s = workload_status(&deployment(2, 2, 1, 3, 2), &bad, &zero);
        let f = s.failure.unwrap();
        assert!(
            f.contains("deployment/web: pod web-1") && f.contains("ErrImageNeverPull"),
            "{f}"
        );
        let creating = [pod("web-2", "Pending", Some(("ContainerCreating", "")))];
        let s = workload_status(&deployment(2, 2, 1, 3, 2), &creating, &|_| {
            Duration::from_secs(30)
        });
        assert_eq!((s.failure, s.stuck_pod.as_deref()), (None, Some("web-2")));
    }

    #[test]
    fn terminating_pods_hold_the_rollout_until_they_are_gone() {
        let mut old = pod("web-old", "Running", None);
        old["metadata"]["deletionTimestamp"] = json!("2026-12-04T21:00:00Z");
        let mut done = pod("web-done", "Succeeded", None);
        done["metadata"]["deletionTimestamp"] = json!("2026-12-04T21:00:00Z");
        let mut other = old.clone();
        other["metadata"]["name"] = json!("db-old");
        other["metadata"]["labels"] = json!({"app": "db"});
        let pods = [pod("web-new", "Running", None), old, done, other];
        assert_eq!(
            terminating_of(&deployment(2, 2, 2, 2, 2), &pods),
            ["web-old"]
        );
        assert!(terminating_of(&deployment(2, 2, 2, 2, 2), &pods[..1]).is_empty());
    }

    #[test]
    fn users_count_pods_templates_and_live_replica_sets() {
        let spec = |s: &str| json!({"volumes": [{"name": "x", "projected": {"sources": [{"secret": {"name": s}}]}}]});
        let list = json!({"items": [
            {"kind": "Pod", "metadata": {"name": "web-1"}, "spec": spec("s-v2")},
            {"kind": "ReplicaSet", "metadata": {"name": "web-a"}, "spec": {"replicas": 0, "template": {"spec": spec("s-v1")}}, "status": {"replicas": 0}},
            {"kind": "ReplicaSet", "metadata": {"name": "web-b"}, "spec": {"replicas": 2, "template": {"spec": spec("s-v2")}}, "status": {"replicas": 2}},
            {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {"spec": spec("s-v2")}}},
        ]});
        let u = secret_users(&list);
        assert_eq!(
            u["s-v2"],
            ["pod/web-1", "replicaset/web-b", "deployment/web"]
        );
        assert!(!u.contains_key("s-v1"));
    }

    #[test]
    fn running_pods_replica_sets_and_templates_name_their_workload() {
        let spec = |s: &str| json!({"volumes": [{"name": "x", "projected": {"sources": [{"secret": {"name": s}}]}}]});
        let owned = |kind: &str, name: &str| json!([{"kind": kind, "name": name}]);
        let list = json!({"items": [
            {"kind": "Pod", "metadata": {"name": "backend-b-1", "ownerReferences": owned("ReplicaSet", "backend-b")}, "spec": spec("s-v2"), "status": {"phase": "Running"}},
            {"kind": "Pod", "metadata": {"name": "backend-a-1", "ownerReferences": owned("ReplicaSet", "backend-a")}, "spec": spec("s-v1"), "status": {"phase": "Running"}},
            {"kind": "Pod", "metadata": {"name": "backend-a-2", "deletionTimestamp": "x", "ownerReferences": owned("ReplicaSet", "backend-a")}, "spec": spec("s-v1"), "status": {"phase": "Running"}},
            {"kind": "Pod", "metadata": {"name": "postgres-0", "ownerReferences": owned("StatefulSet", "postgres")}, "spec": spec("p-v1"), "status": {"phase": "Running"}},
            {"kind": "Pod", "metadata": {"name": "job-x", "labels": {"app.kubernetes.io/name": "tool"}}, "spec": spec("s-v1"), "status": {"phase": "Succeeded"}},
            {"kind": "ReplicaSet", "metadata": {"name": "backend-a", "ownerReferences": owned("Deployment", "backend")}, "spec": {"replicas": 1, "template": {"spec": spec("s-v1")}}, "status": {"replicas": 1}},
            {"kind": "ReplicaSet", "metadata": {"name": "backend-0", "ownerReferences": owned("Deployment", "backend")}, "spec": {"replicas": 0, "template": {"spec": spec("s-v0")}}, "status": {"replicas": 0}},
            {"kind": "Deployment", "metadata": {"name": "backend"}, "spec": {"template": {"spec": spec("s-v2")}}},
        ]});
        let r: Vec<(String, String, Vec<String>)> = running_of(&list)
            .into_iter()
            .map(|r| {
                let ids = r
                    .mounts
                    .iter()
                    .map(|m| match m {
                        super::super::drift::Mounted::Id(i) => i.clone(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                (r.who, r.service, ids)
            })
            .collect();
        let row = |w: &str, s: &str, id: &str| (w.to_string(), s.to_string(), vec![id.to_string()]);
        assert_eq!(
            r,
            [
                row("pod/backend-b-1", "backend-b", "s-v2"),
                row("pod/backend-a-1", "backend", "s-v1"),
                row("pod/postgres-0", "postgres", "p-v1"),
                row("replicaset/backend-a", "backend", "s-v1"),
                row("deployment/backend", "backend", "s-v2"),
            ]
        );
    }
}
