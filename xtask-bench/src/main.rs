//! `xtask-bench`: the developers' benchmarks, kept out of the operator's
//! build. Developers run them as before, `cargo xtask bench [WHAT] [--sizes
//! N,N]`: the operator's binary hands over to `cargo run -p xtask-bench`,
//! and passes its own path (`XTASK_BIN`) so the runs timed are the real
//! tool's. See [`bench`] for what each benchmark measures.

mod bench;
mod table;

use anyhow::{Context, Result, bail};

const WHAT: &[&str] = &["all", "compose", "swarm", "k8s", "aws", "build"];

fn main() {
    if let Err(e) = try_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn try_main() -> Result<()> {
    let (what, sizes) = parse(std::env::args().skip(1))?;
    let root = std::env::current_dir()?;
    bench::run(&root, &what, &sizes)
}

/// `[WHAT] [--sizes N,N]`, as `cargo xtask bench` takes them.
fn parse(args: impl Iterator<Item = String>) -> Result<(String, Vec<usize>)> {
    let mut what = "all".to_string();
    let mut sizes = vec![10, 100];
    let mut args = args;
    while let Some(a) = args.next() {
        if let Some(v) = a.strip_prefix("--sizes=") {
            sizes = sizes_of(v)?;
        } else if a == "--sizes" {
            sizes = sizes_of(&args.next().context("--sizes needs a value: N,N")?)?;
        } else if WHAT.contains(&a.as_str()) {
            what = a;
        } else {
            bail!("unknown benchmark {a:?}; one of {}", WHAT.join(", "));
        }
    }
    Ok((what, sizes))
}

fn sizes_of(v: &str) -> Result<Vec<usize>> {
    v.split(',')
        .map(|n| {
            n.trim()
                .parse()
                .with_context(|| format!("--sizes takes numbers such as 10,100, not {n:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_and_sizes_parse_as_cargo_xtask_bench_takes_them() {
        let p = |a: &[&str]| super::parse(a.iter().map(|s| s.to_string()));
        assert_eq!(p(&[]).unwrap(), ("all".into(), vec![10, 100]));
        assert_eq!(
            p(&["k8s", "--sizes", "5,50"]).unwrap(),
            ("k8s".into(), vec![5, 50])
        );
        assert!(p(&["nope"]).is_err());
        assert!(p(&["--sizes", "x"]).is_err());
    }
}
