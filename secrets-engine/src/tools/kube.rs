//! The kubectl CLI as the Kubernetes store and runtime see it: the shared
//! runner, the environment's namespace and context, server-side apply on
//! stdin, and kubectl's failures turned into the next step.
//!
//! Access the tool needs in its namespace (RBAC): secrets: get, list, create,
//! patch, delete; deployments, statefulsets, daemonsets, services: get, list,
//! create, patch; replicasets, pods, events: get, list. Namespaces: get.
//! Pods/exec: create (the rotate hooks, and `doctor`, which asks for every
//! one of these with `kubectl auth can-i`: [`NEEDED`]).

use anyhow::{Result, bail};

use crate::{
    model::manifest::{BackendKind, Environment},
    tools::runner::Tool,
};

/// The verbs and resources above, for the RBAC error.
pub const ACCESS: &str = "secrets (get, list, create, patch, delete); deployments, statefulsets, daemonsets, services (get, list, create, patch); replicasets, pods, events (get, list); namespaces (get)";

/// [`ACCESS`] as (resource, verbs), plus `pods/exec` (create), which the
/// rotate hooks and `doctor` use: what `doctor` asks `kubectl auth can-i`.
pub const NEEDED: [(&str, &[&str]); 10] = [
    ("secrets", &["get", "list", "create", "patch", "delete"]),
    ("deployments", &["get", "list", "create", "patch"]),
    ("statefulsets", &["get", "list", "create", "patch"]),
    ("daemonsets", &["get", "list", "create", "patch"]),
    ("services", &["get", "list", "create", "patch"]),
    ("replicasets", &["get", "list"]),
    ("pods", &["get", "list"]),
    ("events", &["get", "list"]),
    ("namespaces", &["get"]),
    ("pods/exec", &["create"]),
];

/// `[environments.<env>.k8s]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespace (default `<project>-<env>`), a DNS label.
    pub namespace: String,
    /// The kubeconfig context, when not the current one.
    pub context: Option<String>,
    /// The folder of manifests `deploy` applies.
    pub manifests: String,
}

/// Reads the environment's k8s table; an error names a wrong key or namespace.
pub fn settings(project: &str, env: &Environment) -> Result<Settings> {
    let mut t = env.settings_for(BackendKind::K8s);
    let s = Settings {
        namespace: t
            .opt_str("namespace")?
            .unwrap_or_else(|| format!("{project}-{}", env.name)),
        context: t.opt_str("context")?,
        manifests: t
            .opt_str("manifests")?
            .unwrap_or_else(|| "deploy/k8s".into()),
    };
    t.finish()?;
    check_namespace(&s.namespace)?;
    Ok(s)
}

/// Namespaces are DNS labels: at most 63 of a-z, 0-9 and `-`, starting and
/// ending with a letter or digit. Checked before the cluster is asked.
pub fn check_namespace(ns: &str) -> Result<()> {
    let b = ns.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !ok {
        bail!(
            "{ns:?} is not a valid Kubernetes namespace (at most 63 of a-z, 0-9 and `-`, starting and ending with a letter or digit); fix --namespace or `namespace` in [environments.<env>.k8s]"
        );
    }
    Ok(())
}

/// kubectl bound to one namespace and context.
pub struct Kubectl {
    /// The runner that calls it.
    pub tool: Tool,
    /// The namespace every call names.
    pub namespace: String,
    context: Option<String>,
}

impl Kubectl {
    /// `$KUBECTL` when set, else `kubectl` from PATH.
    pub fn new(s: &Settings) -> Result<Kubectl> {
        let mut tool = Tool::find_later(
            "kubectl",
            "KUBECTL",
            "install kubectl (Debian: `apt-get install kubernetes-client`)",
        );
        tool.silent =
            "the Kubernetes cluster does not answer; check KUBECONFIG and `kubectl cluster-info`"
                .into();
        Ok(Kubectl {
            tool,
            namespace: s.namespace.clone(),
            context: s.context.clone(),
        })
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = Vec::with_capacity(args.len() + 4);
        if let Some(c) = &self.context {
            all.extend(["--context", c.as_str()]);
        }
        all.extend(["--namespace", self.namespace.as_str()]);
        all.extend_from_slice(args);
        all
    }

    /// Runs `kubectl -n NS ARGS` and returns stdout, or the plain reason.
    pub fn read(&self, args: &[&str]) -> Result<String> {
        self.call(args, None)
    }

    /// `kubectl apply --server-side` of `doc` (YAML or JSON) on stdin. Never
    /// client-side apply: it copies every value into an annotation.
    pub fn apply(&self, doc: &[u8]) -> Result<String> {
        self.call(
            &[
                "apply",
                "--server-side",
                "--field-manager=cargo-xtask",
                "-f",
                "-",
            ],
            Some(doc),
        )
    }

    /// Runs `kubectl -n NS ARGS` and gives back status and both streams,
    /// whatever the exit status (`auth can-i` answers "no" with 1, an exec
    /// passes on its command's status).
    pub fn output(&self, args: &[&str]) -> Result<crate::tools::runner::Output> {
        self.tool.output(&self.args(args), None)
    }

    fn call(&self, args: &[&str], input: Option<&[u8]>) -> Result<String> {
        let out = self.tool.output(&self.args(args), input)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(diagnose(&self.namespace, &args.join(" "), &out.stderr))
    }

    /// Fails plainly when the namespace does not exist (a list in a missing
    /// namespace is simply empty, so callers ask when they see nothing).
    pub fn namespace_exists(&self) -> Result<()> {
        let ns = format!("namespace/{}", self.namespace);
        self.read(&["get", &ns, "-o", "name"]).map(|_| ())
    }
}

/// kubectl's failure in the operator's terms: what is wrong and what to do.
pub fn diagnose(ns: &str, what: &str, stderr: &str) -> anyhow::Error {
    let err = stderr.trim();
    let first = err.lines().last().unwrap_or("no output").trim();
    let low = err.to_ascii_lowercase();
    if low.contains("unable to connect to the server")
        || low.contains("connection refused")
        || low.contains("no such host")
        || low.contains("i/o timeout")
        || low.contains("was refused")
    {
        return anyhow::anyhow!(
            "the Kubernetes cluster does not answer ({first}); check KUBECONFIG and `kubectl cluster-info`, or set `context` in [environments.<env>.k8s]"
        );
    }
    if low.contains(&format!("namespaces \"{ns}\" not found")) {
        return anyhow::anyhow!(
            "the namespace {ns} does not exist; create it (`kubectl create namespace {ns}`), or set `namespace` in [environments.<env>.k8s] or pass --namespace"
        );
    }
    if low.contains("forbidden") {
        return anyhow::anyhow!(
            "access is forbidden ({first}); the tool needs, in namespace {ns}: {ACCESS}"
        );
    }
    if low.contains("please enter username") {
        return anyhow::anyhow!(
            "kubectl asked for a user name: the kubeconfig has no credentials for this cluster; fix KUBECONFIG (the tool never answers prompts)"
        );
    }
    if low.contains("no configuration has been provided") || low.contains("invalid configuration") {
        return anyhow::anyhow!(
            "kubectl has no cluster configured ({first}); set KUBECONFIG or run `kubectl config use-context`"
        );
    }
    anyhow::anyhow!("`kubectl {what}` failed: {err}")
}

/// Fails unless `name` is a DNS-1123 subdomain (Secret and workload names).
pub fn check_object_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'));
    if !ok {
        bail!(
            "{name:?} is not a valid Kubernetes object name (at most 253 of a-z, 0-9, `-`, `.`, starting and ending with a letter or digit); rename the project, environment or secret in deploy/secrets.toml"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_become_next_steps() {
        let e = diagnose(
            "ns",
            "get secrets",
            "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?",
        );
        assert!(format!("{e}").contains("cluster does not answer"), "{e}");
        let e = diagnose(
            "ns",
            "get namespace/ns",
            "Error from server (NotFound): namespaces \"ns\" not found",
        );
        assert!(
            format!("{e}").contains("kubectl create namespace ns"),
            "{e}"
        );
        let e = diagnose(
            "ns",
            "get secrets",
            "Error from server (Forbidden): secrets is forbidden: User \"x\" cannot list resource \"secrets\"",
        );
        assert!(
            format!("{e}").contains("secrets (get, list, create, patch, delete)"),
            "{e}"
        );
    }

    #[test]
    fn doctor_asks_every_verb_of_the_access_list() {
        for (res, verbs) in NEEDED {
            if res == "pods/exec" {
                continue;
            }
            assert!(ACCESS.contains(res), "{res} not in ACCESS");
            for v in verbs {
                assert!(ACCESS.contains(v), "{v} not in ACCESS");
            }
        }
    }

    #[test]
    fn object_names() {
        assert!(check_object_name("raqeem-production-postgres-password-v1").is_ok());
        assert!(check_object_name("Raqeem").is_err());
        assert!(check_object_name("a_b").is_err());
        assert!(check_object_name(&"a".repeat(254)).is_err());
    }
}
