//! OpenMetrics text for the node_exporter textfile collector (`status
//! --format openmetrics`): per environment and secret its age, days until
//! due, presence, runtime drift and versions; the last rotation's time and
//! outcome and the failed operations by command, from the audit log; whether
//! each environment's store and runtime could be read.
//!
//! Pure: [`render`] turns plain data into the exposition text, with the
//! metadata (`# TYPE`, `# UNIT`, `# HELP`), label values escaped and `# EOF`
//! at the end. Names, versions, times and counts only: never a value, nor a
//! fingerprint or hash of one.

use std::{collections::BTreeMap, fmt::Write as _};

/// One manifest secret of one environment.
#[derive(Debug, Clone, Default)]
pub struct SecretSample {
    /// The environment's name.
    pub environment: String,
    /// The manifest's name of the secret.
    pub secret: String,
    /// The store's kind (`swarm`, `vault`, ...).
    pub store: String,
    /// In the store (false: missing there).
    pub present: bool,
    /// Age of the current value in seconds (from the store, else the audit log).
    pub age_seconds: Option<u64>,
    /// Whole days until rotation is due (0: today, negative: overdue);
    /// `None` without a policy.
    pub due_in_days: Option<i64>,
    /// The store's current version (versioned stores).
    pub version: Option<u32>,
    /// Runtime drift, when the runtime could be asked.
    pub drift: Option<bool>,
    /// Service → (the oldest version it runs, whether it keeps its own copy).
    pub in_use: BTreeMap<String, (u32, bool)>,
    /// The last rotation: its time (Unix seconds) and whether it completed.
    pub last_rotation: Option<(u64, bool)>,
}

/// What is known of one environment as a whole.
#[derive(Debug, Clone, Default)]
pub struct EnvSample {
    /// The environment's name.
    pub environment: String,
    /// Whether its store answered.
    pub store_up: bool,
    /// Whether its runtime answered.
    pub runtime_up: bool,
    /// Finding kind → how many.
    pub findings: BTreeMap<String, usize>,
    /// Command → failed lines in the audit log (every command the log holds
    /// for the environment, with 0 when none failed).
    pub failed: BTreeMap<String, u64>,
}

/// The finding kinds `status` reports, each emitted (0 when none).
pub const FINDING_KINDS: [&str; 7] = [
    "overdue",
    "missing",
    "drift",
    "runtime-drift",
    "unfinished",
    "unreachable",
    "unreadable",
];

/// OpenMetrics label value: backslash, double quote and line feed escaped.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, suffix: &str, l: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{}{suffix}{} {value}", self.name, labels(l));
    }
}

fn family<'a>(
    out: &'a mut String,
    name: &'static str,
    kind: &str,
    unit: Option<&str>,
    help: &str,
) -> Family<'a> {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    if let Some(u) = unit {
        let _ = writeln!(out, "# UNIT {name} {u}");
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    Family { out, name }
}

/// A secret's own labels.
fn key(s: &SecretSample) -> Vec<(&'static str, &str)> {
    vec![("environment", &s.environment), ("secret", &s.secret)]
}

/// The exposition text, ending with `# EOF`. `now` is the Unix time of the
/// look, for alerts on a file that stopped being refreshed.
pub fn render(envs: &[EnvSample], secrets: &[SecretSample], now: u64) -> String {
    let mut out = String::new();
    let mut f = family(
        &mut out,
        "xtask_secret_status_timestamp_seconds",
        "gauge",
        Some("seconds"),
        "When cargo xtask status wrote these metrics (Unix time).",
    );
    f.sample("", &[], now);

    let mut f = family(
        &mut out,
        "xtask_secret_environment_up",
        "gauge",
        None,
        "Whether the environment's store or runtime (part) could be read: 0 means it could not look, so nothing about it is known.",
    );
    for e in envs {
        let env = e.environment.as_str();
        f.sample(
            "",
            &[("environment", env), ("part", "store")],
            u8::from(e.store_up),
        );
        f.sample(
            "",
            &[("environment", env), ("part", "runtime")],
            u8::from(e.runtime_up),
        );
    }

    let mut f = family(
        &mut out,
        "xtask_secret_present",
        "gauge",
        None,
        "Whether the environment's store holds the secret the manifest gives it (0: missing).",
    );
    for s in secrets {
        let l = key(s);
        let mut l = l.clone();
        l.push(("store", s.store.as_str()));
        f.sample("", &l, u8::from(s.present));
    }

    let mut f = family(
        &mut out,
        "xtask_secret_age_seconds",
        "gauge",
        Some("seconds"),
        "Age of the secret's current value (from the store, else the audit log).",
    );
    for s in secrets {
        let l = key(s);
        if let Some(a) = s.age_seconds {
            f.sample("", &l, a);
        }
    }

    let mut f = family(
        &mut out,
        "xtask_secret_due_in_seconds",
        "gauge",
        Some("seconds"),
        "Time until the rotation policy says the secret is due, in whole days as status counts them (0: today, negative: overdue); absent without a policy.",
    );
    for s in secrets {
        let l = key(s);
        if let Some(d) = s.due_in_days {
            f.sample("", &l, d * 86_400);
        }
    }

    let mut f = family(
        &mut out,
        "xtask_secret_version",
        "gauge",
        None,
        "The current version of the secret in a versioned store (Swarm, Kubernetes, Vault, AWS).",
    );
    for s in secrets {
        let l = key(s);
        if let Some(v) = s.version {
            f.sample("", &l, v);
        }
    }

    let mut f = family(
        &mut out,
        "xtask_secret_version_in_use",
        "gauge",
        None,
        "The oldest version of the secret a service runs, from the runtime (kept=\"true\": the service keeps its own copy by design).",
    );
    for s in secrets {
        let l = key(s);
        for (svc, (v, kept)) in &s.in_use {
            let mut l = l.clone();
            l.push(("service", svc.as_str()));
            l.push(("kept", if *kept { "true" } else { "false" }));
            f.sample("", &l, v);
        }
    }

    let mut f = family(
        &mut out,
        "xtask_secret_drift",
        "gauge",
        None,
        "1 when a service, task, pod or container (not one that keeps its own copy) runs a superseded version; absent when the runtime could not be asked.",
    );
    for s in secrets {
        let l = key(s);
        if let Some(d) = s.drift {
            f.sample("", &l, u8::from(d));
        }
    }

    let mut f = family(
        &mut out,
        "xtask_secret_last_rotation_timestamp_seconds",
        "gauge",
        Some("seconds"),
        "When the secret's last rotation (rotate-secrets) was logged (Unix time).",
    );
    for s in secrets {
        let l = key(s);
        if let Some((t, _)) = s.last_rotation {
            f.sample("", &l, t);
        }
    }

    let mut f = family(
        &mut out,
        "xtask_secret_last_rotation_success",
        "gauge",
        None,
        "1 when the secret's last rotation completed, 0 when it failed or stopped before it completed.",
    );
    for s in secrets {
        let l = key(s);
        if let Some((_, ok)) = s.last_rotation {
            f.sample("", &l, u8::from(ok));
        }
    }

    // A gauge, not a counter: it is what the audit log holds now (a log
    // edited by hand can hold fewer), and both the OpenMetrics and the
    // classic text parsers (node_exporter's textfile collector, promtool)
    // read it the same way.
    let mut f = family(
        &mut out,
        "xtask_secret_failed_operations",
        "gauge",
        None,
        "Failed steps in the audit log, by environment and command.",
    );
    for e in envs {
        for (cmd, n) in &e.failed {
            f.sample(
                "",
                &[
                    ("environment", e.environment.as_str()),
                    ("command", cmd.as_str()),
                ],
                n,
            );
        }
    }

    let mut f = family(
        &mut out,
        "xtask_secret_findings",
        "gauge",
        None,
        "Findings of cargo xtask status --check, by environment and kind.",
    );
    for e in envs {
        for kind in FINDING_KINDS {
            let n = e.findings.get(kind).copied().unwrap_or(0);
            f.sample(
                "",
                &[("environment", e.environment.as_str()), ("kind", kind)],
                n,
            );
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(
            labels(&[("service", "we\"b"), ("environment", "p")]),
            r#"{service="we\"b",environment="p"}"#
        );
    }

    #[test]
    fn families_have_metadata_samples_and_end_with_eof() {
        let env = EnvSample {
            environment: "production".into(),
            store_up: true,
            runtime_up: false,
            findings: [("overdue".to_string(), 2)].into(),
            failed: [
                ("rotate-secrets".to_string(), 3),
                ("setup-secrets".to_string(), 0),
            ]
            .into(),
        };
        let s = SecretSample {
            environment: "production".into(),
            secret: "jwt_secret".into(),
            store: "swarm".into(),
            present: true,
            age_seconds: Some(86_400),
            due_in_days: Some(-3),
            version: Some(3),
            drift: Some(true),
            in_use: [("backend".to_string(), (2, false))].into(),
            last_rotation: Some((1_700_000_000, false)),
        };
        let missing = SecretSample {
            environment: "staging".into(),
            secret: "jwt_secret".into(),
            store: "swarm".into(),
            ..Default::default()
        };
        let text = render(&[env], &[s, missing], 1_800_000_000);
        for line in [
            "# TYPE xtask_secret_age_seconds gauge",
            "# UNIT xtask_secret_age_seconds seconds",
            "xtask_secret_age_seconds{environment=\"production\",secret=\"jwt_secret\"} 86400",
            "# UNIT xtask_secret_due_in_seconds seconds",
            "xtask_secret_due_in_seconds{environment=\"production\",secret=\"jwt_secret\"} -259200",
            "xtask_secret_present{environment=\"staging\",secret=\"jwt_secret\",store=\"swarm\"} 0",
            "xtask_secret_version_in_use{environment=\"production\",secret=\"jwt_secret\",service=\"backend\",kept=\"false\"} 2",
            "xtask_secret_drift{environment=\"production\",secret=\"jwt_secret\"} 1",
            "xtask_secret_last_rotation_success{environment=\"production\",secret=\"jwt_secret\"} 0",
            "# TYPE xtask_secret_failed_operations gauge",
            "xtask_secret_failed_operations{environment=\"production\",command=\"rotate-secrets\"} 3",
            "xtask_secret_environment_up{environment=\"production\",part=\"runtime\"} 0",
            "xtask_secret_findings{environment=\"production\",kind=\"overdue\"} 2",
            "xtask_secret_findings{environment=\"production\",kind=\"runtime-drift\"} 0",
            "xtask_secret_status_timestamp_seconds 1800000000",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        // No age for the missing one; every sample's family was declared first.
        assert!(!text.contains("xtask_secret_age_seconds{environment=\"staging\""));
        let mut declared = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!declared.contains(&name), "{name} declared twice");
                declared.push(name);
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let last = declared.last().unwrap();
                assert_eq!(name, last, "a sample after another family's metadata");
            }
        }
    }
}
