//! The command line. Built with clap's builder API rather than its derive macros:
//! no proc-macro crates keeps the cold build of the xtask fast.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

use secrets_engine::model::manifest::BackendKind;

#[derive(Debug)]
pub enum Cmd {
    SetupSecrets(EnvArgs, SetupArgs),
    ListSecrets(EnvArgs, bool),
    VerifySecrets(EnvArgs),
    RemoveSecrets(EnvArgs, RemoveArgs),
    RotateSecrets(EnvArgs, RotateArgs),
    GenerateSecret {
        length: usize,
    },
    Deploy(EnvArgs, DeployArgs),
    /// `doctor <env> [--json]`.
    Doctor(EnvArgs, bool),
    Check,
    /// `status [ENV...] [--check] [--json | --format table|json|openmetrics] [--out FILE]`.
    Status {
        envs: Vec<String>,
        check: bool,
        json: bool,
        /// `--format openmetrics`: metrics for the node_exporter textfile collector.
        openmetrics: bool,
        /// Where the metrics go (atomically), else stdout.
        out: Option<std::path::PathBuf>,
    },
    /// `diff <env-a> <env-b> [--json]`.
    Diff {
        a: String,
        b: String,
        json: bool,
    },
    Bench {
        what: String,
        sizes: Vec<usize>,
    },
    BackupSecrets(BackupArgs),
    RestoreSecrets(EnvArgs, RestoreArgs),
    Scan(ScanArgs),
    Run(RunArgs),
    Completions {
        shell: String,
    },
    MigrateEnvToSecrets(MigrateArgs),
    AdoptSecrets(EnvArgs, bool),
}

#[derive(Debug, Clone)]
pub struct BackupArgs {
    pub env: String,
    pub out: std::path::PathBuf,
    /// age public keys; empty means the manifest's, then a passphrase.
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RestoreArgs {
    pub from: std::path::PathBuf,
    pub identity: Option<std::path::PathBuf>,
    pub force: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ScanArgs {
    pub history: bool,
    pub staged: bool,
    pub install_hook: bool,
}

#[derive(Debug, Clone)]
pub struct RunArgs {
    pub env: String,
    pub plain_env: bool,
    /// `--no-mask`: the child's output passes as it is.
    pub no_mask: bool,
    pub command: Vec<std::ffi::OsString>,
}

/// Which environment a command works on, and this run's overrides.
pub type EnvArgs = secrets_engine::session::Target;

#[derive(Debug, Clone, Copy)]
pub struct SetupArgs {
    pub generate_missing: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct RemoveArgs {
    pub secrets: Vec<String>,
    pub yes: bool,
    pub dry_run: bool,
    /// AWS: delete at once, with no recovery window.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct RotateArgs {
    pub all: bool,
    pub secrets: Vec<String>,
    pub keep: usize,
    pub dry_run: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct MigrateArgs {
    /// `--from`: the plain env file, relative to the repository root.
    pub from: std::path::PathBuf,
    /// `--to`: the environment whose env file receives the values.
    pub to: String,
    pub write_compose: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct DeployArgs {
    pub dry_run: bool,
    pub timeout: Duration,
}

fn env_command(name: &'static str, about: &'static str) -> Command {
    Command::new(name)
        .about(about)
        .arg(
            Arg::new("env")
                .required(true)
                .value_name("ENV")
                .help("Environment from deploy/secrets.toml (production, staging, develop, ...)"),
        )
        .arg(
            Arg::new("backend")
                .long("backend")
                .value_name("BACKEND")
                .value_parser(["compose", "swarm", "k8s", "vault", "aws"])
                .help("Use this store and runtime for this run instead of the environment's (vault and aws replace the store only)"),
        )
        .arg(
            Arg::new("namespace")
                .long("namespace")
                .value_name("NAMESPACE")
                .help("Kubernetes: use this namespace instead of the manifest's"),
        )
        .arg(
            Arg::new("lock-timeout")
                .long("lock-timeout")
                .value_name("SECONDS")
                .default_value("300")
                .value_parser(value_parser!(u64).range(0..=86400))
                .help("How long to wait for another run on this environment to finish"),
        )
}

fn dry_run() -> Arg {
    Arg::new("dry-run")
        .long("dry-run")
        .action(ArgAction::SetTrue)
        .help("Print the plan (never values) and change nothing")
}

fn timeout() -> Arg {
    Arg::new("timeout")
        .long("timeout")
        .value_name("SECONDS")
        .default_value("300")
        .value_parser(value_parser!(u64).range(1..=86400))
        .help("How long to wait for the stack to converge")
}

pub fn command() -> Command {
    operations(base())
}

fn base() -> Command {
    Command::new("xtask")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Secrets and deployment tasks: replaces the setup/remove/deploy/rotate shell scripts")
        .after_help("Run `cargo xtask setup-secrets develop` to create the develop secrets with no server needed.")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            env_command("setup-secrets", "Validate an environment's env file and create its secrets in the backend")
                .arg(
                    Arg::new("generate-missing")
                        .long("generate-missing")
                        .action(ArgAction::SetTrue)
                        .help("Generate missing values (the default for develop) and write them back to the env file"),
                )
                .arg(dry_run()),
        )
        .subcommand(
            env_command("list-secrets", "List an environment's secrets in the backend: state, version, age, users")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON for machines")),
        )
        .subcommand(env_command("verify-secrets", "Exit 1 when a secret is missing, weak or out of date in the backend"))
        .subcommand(
            env_command("remove-secrets", "Remove an environment's secrets from the backend")
                .arg(Arg::new("secret").long("secret").value_name("NAME").action(ArgAction::Append).help("Only this secret (repeatable)"))
                .arg(Arg::new("yes").long("yes").short('y').action(ArgAction::SetTrue).help("Do not ask for confirmation"))
                .arg(Arg::new("force").long("force").action(ArgAction::SetTrue).help("AWS: delete at once instead of scheduling deletion with a recovery window"))
                .arg(dry_run()),
        )
        .subcommand(
            env_command("rotate-secrets", "Give secrets new values, redeploy without downtime, retire old versions")
                .arg(Arg::new("all").long("all").action(ArgAction::SetTrue).conflicts_with("secret").help("Rotate every secret"))
                .arg(Arg::new("secret").long("secret").value_name("NAME").action(ArgAction::Append).help("Rotate this secret (repeatable)"))
                .arg(
                    Arg::new("keep")
                        .long("keep")
                        .value_name("N")
                        .default_value("1")
                        .value_parser(value_parser!(u32).range(0..=100))
                        .help("Superseded versions to keep"),
                )
                .arg(dry_run())
                .arg(timeout()),
        )
        .subcommand(
            Command::new("generate-secret").about("Print one new random value (URL-safe) to stdout").arg(
                Arg::new("length")
                    .long("length")
                    .value_name("N")
                    .default_value("32")
                    .value_parser(value_parser!(u32).range(16..=4096))
                    .help("Number of characters"),
            ),
        )
        .subcommand(env_command("deploy", "Deploy the stack with the current secrets and wait until it converged").arg(dry_run()).arg(timeout()))
        .subcommand(
            env_command("doctor", "Check store, access, files and every running container's secrets; exit 1 on any finding")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON for machines (shape in docs/doctor.md)")),
        )
        .subcommand(
            Command::new("status")
                .about("One table across environments: store, version, age, last rotation, days until due, users, drift")
                .arg(
                    Arg::new("envs")
                        .value_name("ENV")
                        .num_args(0..)
                        .help("Environments to show (default: every environment of deploy/secrets.toml)"),
                )
                .arg(
                    Arg::new("check")
                        .long("check")
                        .action(ArgAction::SetTrue)
                        .help("Exit 1 when anything is overdue, missing, drifted, unfinished or unreadable, one line per finding"),
                )
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).conflicts_with("format").help("Print JSON for machines (shape in docs/status-and-audit.md); the same as --format json"))
                .arg(Arg::new("format").long("format").value_name("FORMAT").value_parser(["table", "json", "openmetrics"]).help("table (default), json, or openmetrics: metrics for the node_exporter textfile collector (docs/monitoring.md)"))
                .arg(Arg::new("out").long("out").value_name("FILE").value_parser(value_parser!(std::path::PathBuf)).help("With --format openmetrics: write the metrics to FILE atomically (temporary file and rename in its folder; relative to the repository root) instead of stdout")),
        )
        .subcommand(
            Command::new("diff")
                .about("What differs between two environments: keys in the manifest, env files and stores, policy, versions and ages, reused production values")
                .arg(Arg::new("a").required(true).value_name("ENV_A").help("The first environment"))
                .arg(Arg::new("b").required(true).value_name("ENV_B").help("The environment to compare it with"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON for machines (shape in docs/status-and-audit.md)")),
        )
        .subcommand(
            Command::new("migrate-env-to-secrets")
                .about("Move the secrets of a plain .env into an environment's env file, show or make the compose changes, and set them up")
                .arg(Arg::new("from").long("from").value_name("FILE").default_value(".env").help("The plain env file to migrate from (relative to the repository root)"))
                .arg(Arg::new("to").long("to").value_name("ENV").default_value("develop").help("The environment whose env file receives the secrets"))
                .arg(Arg::new("write-compose").long("write-compose").action(ArgAction::SetTrue).help("Edit the compose file's text (services read <NAME>_FILE) and run check"))
                .arg(dry_run()),
        )
        .subcommand(
            env_command("adopt-secrets", "Adopt the unversioned <project>_<env>_<name> Swarm secrets the old scripts created, as version 0, without touching them")
                .arg(dry_run()),
        )
        .subcommand(Command::new("check").about("Check that deploy/secrets.toml and the compose files name the same secrets"))
        .subcommand(
            Command::new("bench")
                .about("Benchmarks that print one table of figures: every store against its baseline, and the build (swarm needs a Docker engine in swarm mode, k8s the cluster in KUBECONFIG)")
                .arg(
                    Arg::new("what")
                        .default_value("all")
                        .value_parser(["all", "compose", "swarm", "k8s", "aws", "build"])
                        .help("What to measure: all (one table with every store and the build), or one of them"),
                )
                .arg(
                    Arg::new("sizes")
                        .long("sizes")
                        .value_name("N,N")
                        .default_value("10,100")
                        .value_delimiter(',')
                        .value_parser(value_parser!(usize)),
                ),
        )
}

/// The commands of day-to-day operations: backup, restore, scan, run, completions.
fn operations(cli: Command) -> Command {
    let env = || {
        Arg::new("env")
            .required(true)
            .value_name("ENV")
            .help("Environment from deploy/secrets.toml (production, staging, develop, ...)")
    };
    cli.subcommand(
        Command::new("backup-secrets")
            .about("Write an age-encrypted backup of an environment's env file and the files its file secrets name")
            .arg(env())
            .arg(Arg::new("out").long("out").value_name("FILE").required(true).value_parser(value_parser!(std::path::PathBuf)).help("The backup file to write (refused if it exists)"))
            .arg(Arg::new("recipient").long("recipient").value_name("KEY").action(ArgAction::Append).help("age public key to encrypt to (repeatable; default: backup_recipients in the manifest, else a passphrase on a terminal)")),
    )
    .subcommand(
        env_command("restore-secrets", "Restore an environment's env file and files from a backup, then bring the store in line")
            .arg(Arg::new("from").long("from").value_name("FILE").required(true).value_parser(value_parser!(std::path::PathBuf)).help("The backup file written by backup-secrets"))
            .arg(Arg::new("identity").long("identity").value_name("FILE").value_parser(value_parser!(std::path::PathBuf)).help("age identity (key) file; without it age asks for the passphrase on a terminal"))
            .arg(Arg::new("force").long("force").action(ArgAction::SetTrue).help("Overwrite files whose current values differ from the backup's"))
            .arg(dry_run()),
    )
    .subcommand(
        Command::new("scan")
            .about("Look for every current secret value (plain, base64, percent-encoded) in tracked files, staged changes or history")
            .arg(Arg::new("history").long("history").action(ArgAction::SetTrue).help("Also search every commit reachable from any ref"))
            .arg(Arg::new("staged").long("staged").action(ArgAction::SetTrue).conflicts_with("history").help("Search the staged changes only (what the pre-commit hook runs)"))
            .arg(Arg::new("install-hook").long("install-hook").action(ArgAction::SetTrue).conflicts_with_all(["history", "staged"]).help("Install a git pre-commit hook that runs `scan --staged`")),
    )
    .subcommand(
        Command::new("run")
            .about("Run a command with an environment's secrets as files (SECRETS_DIR, <NAME>_FILE) in a private temporary folder")
            .arg(env())
            .arg(Arg::new("plain-env").long("plain-env").action(ArgAction::SetTrue).help("Pass the values as plain environment variables instead (less safe: children and crash dumps see them)"))
            .arg(Arg::new("no-mask").long("no-mask").action(ArgAction::SetTrue).help("Do not replace secret values in the command's piped stdout and stderr by <redacted:NAME>"))
            .arg(Arg::new("command").value_name("COMMAND").required(true).num_args(1..).last(true).value_parser(value_parser!(std::ffi::OsString)).help("The command and its arguments, after --")),
    )
    .subcommand(
        Command::new("completions")
            .about("Print a shell completion script to stdout")
            .arg(Arg::new("shell").required(true).value_parser(["bash", "zsh", "fish", "elvish", "powershell"]).help("The shell to complete for")),
    )
}

pub fn parse() -> Result<Cmd> {
    from_matches(command().get_matches())
}

fn env_args(m: &ArgMatches) -> EnvArgs {
    EnvArgs {
        env: m.get_one::<String>("env").cloned().unwrap_or_default(),
        backend: m
            .get_one::<String>("backend")
            .and_then(|b| BackendKind::parse(b)),
        namespace: m.get_one::<String>("namespace").cloned(),
        lock_timeout: Duration::from_secs(*m.get_one::<u64>("lock-timeout").unwrap_or(&300)),
    }
}

fn flag(m: &ArgMatches, name: &str) -> bool {
    m.get_flag(name)
}

fn names(m: &ArgMatches, name: &str) -> Vec<String> {
    m.get_many::<String>(name)
        .map(|v| v.cloned().collect())
        .unwrap_or_default()
}

fn secs(m: &ArgMatches) -> Duration {
    Duration::from_secs(*m.get_one::<u64>("timeout").unwrap_or(&300))
}

pub fn from_matches(m: ArgMatches) -> Result<Cmd> {
    let Some((name, m)) = m.subcommand() else {
        bail!("no command given; see `cargo xtask --help`")
    };
    Ok(match name {
        "setup-secrets" => Cmd::SetupSecrets(
            env_args(m),
            SetupArgs {
                generate_missing: flag(m, "generate-missing"),
                dry_run: flag(m, "dry-run"),
            },
        ),
        "list-secrets" => Cmd::ListSecrets(env_args(m), flag(m, "json")),
        "verify-secrets" => Cmd::VerifySecrets(env_args(m)),
        "remove-secrets" => Cmd::RemoveSecrets(
            env_args(m),
            RemoveArgs {
                secrets: names(m, "secret"),
                yes: flag(m, "yes"),
                dry_run: flag(m, "dry-run"),
                force: flag(m, "force"),
            },
        ),
        "rotate-secrets" => {
            let args = RotateArgs {
                all: flag(m, "all"),
                secrets: names(m, "secret"),
                keep: *m.get_one::<u32>("keep").unwrap_or(&1) as usize,
                dry_run: flag(m, "dry-run"),
                timeout: secs(m),
            };
            if !args.all && args.secrets.is_empty() {
                bail!("rotate-secrets needs --all or at least one --secret NAME");
            }
            Cmd::RotateSecrets(env_args(m), args)
        }
        "generate-secret" => Cmd::GenerateSecret {
            length: *m.get_one::<u32>("length").unwrap_or(&32) as usize,
        },
        "deploy" => Cmd::Deploy(
            env_args(m),
            DeployArgs {
                dry_run: flag(m, "dry-run"),
                timeout: secs(m),
            },
        ),
        "doctor" => Cmd::Doctor(env_args(m), flag(m, "json")),
        "check" => Cmd::Check,
        "status" => {
            let format = m.get_one::<String>("format").map(String::as_str);
            let out = m.get_one::<std::path::PathBuf>("out").cloned();
            if out.is_some() && format != Some("openmetrics") {
                anyhow::bail!(
                    "status: --out writes metrics; add `--format openmetrics` (the table and JSON go to stdout)"
                );
            }
            Cmd::Status {
                envs: names(m, "envs"),
                check: flag(m, "check"),
                json: flag(m, "json") || format == Some("json"),
                openmetrics: format == Some("openmetrics"),
                out,
            }
        }
        "diff" => Cmd::Diff {
            a: m.get_one::<String>("a").cloned().unwrap_or_default(),
            b: m.get_one::<String>("b").cloned().unwrap_or_default(),
            json: flag(m, "json"),
        },
        "migrate-env-to-secrets" => Cmd::MigrateEnvToSecrets(MigrateArgs {
            from: m
                .get_one::<String>("from")
                .cloned()
                .unwrap_or_default()
                .into(),
            to: m.get_one::<String>("to").cloned().unwrap_or_default(),
            write_compose: flag(m, "write-compose"),
            dry_run: flag(m, "dry-run"),
        }),
        "adopt-secrets" => Cmd::AdoptSecrets(env_args(m), flag(m, "dry-run")),
        "bench" => Cmd::Bench {
            what: m.get_one::<String>("what").cloned().unwrap_or_default(),
            sizes: m
                .get_many::<usize>("sizes")
                .map(|v| v.copied().collect())
                .unwrap_or_default(),
        },
        "backup-secrets" => Cmd::BackupSecrets(BackupArgs {
            env: m.get_one::<String>("env").cloned().unwrap_or_default(),
            out: m
                .get_one::<std::path::PathBuf>("out")
                .cloned()
                .unwrap_or_default(),
            recipients: names(m, "recipient"),
        }),
        "restore-secrets" => Cmd::RestoreSecrets(
            env_args(m),
            RestoreArgs {
                from: m
                    .get_one::<std::path::PathBuf>("from")
                    .cloned()
                    .unwrap_or_default(),
                identity: m.get_one::<std::path::PathBuf>("identity").cloned(),
                force: flag(m, "force"),
                dry_run: flag(m, "dry-run"),
            },
        ),
        "scan" => Cmd::Scan(ScanArgs {
            history: flag(m, "history"),
            staged: flag(m, "staged"),
            install_hook: flag(m, "install-hook"),
        }),
        "run" => Cmd::Run(RunArgs {
            env: m.get_one::<String>("env").cloned().unwrap_or_default(),
            plain_env: flag(m, "plain-env"),
            no_mask: flag(m, "no-mask"),
            command: m
                .get_many::<std::ffi::OsString>("command")
                .map(|v| v.cloned().collect())
                .unwrap_or_default(),
        }),
        "completions" => Cmd::Completions {
            shell: m.get_one::<String>("shell").cloned().unwrap_or_default(),
        },
        other => bail!("unknown command {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Cmd> {
        from_matches(command().try_get_matches_from(args)?)
    }

    #[test]
    fn cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn parses_common_forms() {
        match parse_args(&[
            "xtask",
            "setup-secrets",
            "production",
            "--generate-missing",
            "--backend",
            "swarm",
        ])
        .unwrap()
        {
            Cmd::SetupSecrets(e, s) => {
                assert_eq!(e.env, "production");
                assert_eq!(e.backend, Some(BackendKind::Swarm));
                assert!(s.generate_missing && !s.dry_run);
            }
            c => panic!("{c:?}"),
        }
        match parse_args(&[
            "xtask",
            "rotate-secrets",
            "staging",
            "--secret",
            "a",
            "--secret",
            "b",
            "--keep",
            "2",
        ])
        .unwrap()
        {
            Cmd::RotateSecrets(_, r) => assert_eq!((r.secrets.len(), r.keep, r.all), (2, 2, false)),
            c => panic!("{c:?}"),
        }
        match parse_args(&[
            "xtask",
            "status",
            "production",
            "staging",
            "--check",
            "--json",
        ])
        .unwrap()
        {
            Cmd::Status {
                envs, check, json, ..
            } => {
                assert_eq!((envs.len(), check, json), (2, true, true))
            }
            c => panic!("{c:?}"),
        }
        match parse_args(&["xtask", "status"]).unwrap() {
            Cmd::Status {
                envs, check, json, ..
            } => assert!(envs.is_empty() && !check && !json),
            c => panic!("{c:?}"),
        }
        match parse_args(&[
            "xtask",
            "status",
            "--format",
            "openmetrics",
            "--out",
            "m.prom",
        ])
        .unwrap()
        {
            Cmd::Status {
                json,
                openmetrics,
                out,
                ..
            } => assert_eq!(
                (json, openmetrics, out),
                (false, true, Some("m.prom".into()))
            ),
            c => panic!("{c:?}"),
        }
        let e = parse_args(&["xtask", "status", "--out", "m.prom"]).unwrap_err();
        assert!(
            format!("{e:#}").contains("add `--format openmetrics`"),
            "{e:#}"
        );
        assert!(parse_args(&["xtask", "status", "--json", "--format", "table"]).is_err());
        assert!(parse_args(&["xtask", "rotate-secrets", "staging"]).is_err());
        match parse_args(&["xtask", "run", "develop", "--", "env", "--plain-env", "-0"]).unwrap() {
            Cmd::Run(r) => {
                assert!(!r.plain_env, "flags after -- belong to the command");
                assert_eq!(r.command, ["env", "--plain-env", "-0"]);
            }
            c => panic!("{c:?}"),
        }
        assert!(parse_args(&["xtask", "run", "develop", "env"]).is_err());
        match parse_args(&[
            "xtask",
            "restore-secrets",
            "production",
            "--from",
            "b.age",
            "--identity",
            "k.txt",
            "--force",
        ])
        .unwrap()
        {
            Cmd::RestoreSecrets(e, r) => {
                assert_eq!(e.env, "production");
                assert!(r.force && !r.dry_run && r.identity.is_some());
            }
            c => panic!("{c:?}"),
        }
        assert!(parse_args(&["xtask", "backup-secrets", "production"]).is_err());
        assert!(parse_args(&["xtask", "scan", "--install-hook", "--history"]).is_err());
        assert!(parse_args(&["xtask", "scan", "--staged", "--history"]).is_err());
        assert!(parse_args(&["xtask", "setup-secrets", "x", "--backend", "nomad"]).is_err());
        assert!(parse_args(&["xtask", "generate-secret", "--length", "8"]).is_err());
    }
}
