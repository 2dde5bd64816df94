//! Property tests over the parsers and builders that take operator input: the
//! env-file parser and writer, the manifest parser, templates and derived URLs,
//! and the compose-file reader. Random inputs from a seeded generator (the seed
//! is printed, and `XTASK_PROPTEST_SEED` replays it), bounded in count and time.
//! Properties: nothing panics; a value written and read back is byte-identical;
//! a derived URL parses and its parts decode back to the originals.

use std::time::{Duration, Instant};

use crate::{
    edit::stackfile,
    model::envfile::EnvFile,
    model::manifest::Manifest,
    model::secret::SecretValue,
    plan::resolve::{Desired, render_template},
    testutil::TempDir,
};

/// xorshift64*: small, deterministic, good enough to explore inputs.
struct Gen(u64);

impl Gen {
    fn new(test: &str) -> Gen {
        let seed = std::env::var("XTASK_PROPTEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| crate::model::secret::random_u64() | 1);
        eprintln!("{test}: seed {seed} (XTASK_PROPTEST_SEED={seed} replays it)");
        Gen(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Text made of pieces that matter to the parsers under test.
    fn text(&mut self, pieces: &[&str], max: usize) -> String {
        let n = self.below(max + 1);
        (0..n).map(|_| *self.pick(pieces)).collect()
    }

    /// Any character, ASCII more often than not.
    fn char(&mut self) -> char {
        match self.below(4) {
            0 => char::from_u32(0x80 + self.below(0x2000) as u32).unwrap_or('é'),
            _ => (0x20 + self.below(0x5f) as u8) as char,
        }
    }
}

/// Runs `f` up to `n` times or for `limit`, whichever ends first.
fn bounded(n: usize, limit: Duration, mut f: impl FnMut(usize)) {
    let start = Instant::now();
    for i in 0..n {
        if start.elapsed() > limit {
            break;
        }
        f(i);
    }
}

const ENV_PIECES: &[&str] = &[
    "A", "KEY", "_", "=", "\n", "\r\n", "'", "\"", "\\", "$", "{", "}", "#", " ", "\t", "export ",
    "x", "é", "\\n", "=\"", "\0",
];

#[test]
fn env_files_never_panic_the_parser() {
    let mut g = Gen::new("env_files_never_panic_the_parser");
    let dir = TempDir::new();
    let path = dir.path().join("t.env");
    bounded(1500, Duration::from_secs(5), |_| {
        let text = g.text(ENV_PIECES, 40);
        std::fs::write(&path, &text).unwrap();
        let _ = EnvFile::load(&path, "t.env".into());
    });
}

#[test]
fn values_written_to_env_files_read_back_byte_identical() {
    let mut g = Gen::new("values_written_to_env_files_read_back_byte_identical");
    let dir = TempDir::new();
    let path = dir.path().join("t.env");
    bounded(600, Duration::from_secs(5), |i| {
        let _ = std::fs::remove_file(&path);
        let len = 1 + g.below(40);
        let tail = *g.pick(&["", "'", "\\", "\\'", "\"", "$", "${A}", " #"]);
        let value: String = (0..len)
            .map(|_| g.char())
            .chain(tail.chars())
            .filter(|c| !c.is_control())
            .collect();
        if value.is_empty() {
            return;
        }
        let mut f = EnvFile::empty(path.clone(), "t.env".into());
        let key = format!("K{i}");
        let v = SecretValue::new(value.clone().into_bytes());
        match f.write_updates(&[(key.clone(), v)], "# test\n") {
            Ok(()) => {
                let back = EnvFile::load(&path, "t.env".into())
                    .unwrap_or_else(|e| panic!("{value:?} was written but cannot be read: {e:#}"));
                let got = back.get(&key).map(|e| e.value.expose().to_vec());
                assert_eq!(
                    got.as_deref(),
                    Some(value.as_bytes()),
                    "value {value:?} changed on the way through"
                );
            }
            // Refusing a value it cannot write faithfully is allowed; changing it is not.
            Err(e) => assert!(
                format!("{e:#}").contains("cannot be written"),
                "{value:?}: {e:#}"
            ),
        }
    });
}

const TOML_PIECES: &[&str] = &[
    "project = \"p\"\n",
    "[environments.develop]\n",
    "[environments.prod]\n",
    "backend = \"compose\"\n",
    "backend = \"swarm\"\n",
    "store = \"vault\"\n",
    "runtime = \"k8s\"\n",
    "[secrets.a]\n",
    "[secrets.b]\n",
    "kind = \"password\"\n",
    "kind = \"derived\"\n",
    "template = \"{a}:{b}@{env}\"\n",
    "template = \"{{\"\n",
    "[k8s]\n",
    "namespace = 3\n",
    "min_length = 0\n",
    "owner = \"1:2\"\n",
    "=",
    "\"",
    "[",
    "\n",
];

#[test]
fn manifests_never_panic_the_parser() {
    let mut g = Gen::new("manifests_never_panic_the_parser");
    bounded(3000, Duration::from_secs(5), |_| {
        let text = g.text(TOML_PIECES, 14);
        let _ = Manifest::parse(&text);
    });
}

/// Percent-decoding, for checking what the template encoded.
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(h, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn derived_urls_always_parse_and_decode_to_their_parts() {
    let mut g = Gen::new("derived_urls_always_parse_and_decode_to_their_parts");
    let m = Manifest::parse(
        "project = \"p\"\n[environments.e]\nbackend = \"compose\"\n[secrets.u]\nkind = \"username\"\n[secrets.pw]\nkind = \"password\"\n[secrets.url]\nkind = \"derived\"\ntemplate = \"postgresql://{u}:{pw}@db:5432/{project}_{env}\"\n",
    )
    .unwrap();
    let spec = |n: &str| m.secrets.iter().find(|s| s.name == n).unwrap().clone();
    bounded(2000, Duration::from_secs(5), |_| {
        let part = |g: &mut Gen| -> String { (0..1 + g.below(24)).map(|_| g.char()).collect() };
        let (user, pw) = (part(&mut g), part(&mut g));
        let parts = [
            Desired {
                spec: spec("u"),
                value: SecretValue::new(user.clone().into_bytes()),
                origin: "u".into(),
            },
            Desired {
                spec: spec("pw"),
                value: SecretValue::new(pw.clone().into_bytes()),
                origin: "pw".into(),
            },
        ];
        let url = render_template(&spec("url"), "p", "e", &parts).unwrap();
        let url = url.expose_str().unwrap().to_string();
        // scheme://user:password@host:port/path, with exactly one '@' and no
        // structural character left unencoded in the parts.
        let rest = url.strip_prefix("postgresql://").expect("scheme");
        let (auth, host) = rest.split_once('@').expect("one @");
        assert_eq!(host, "db:5432/p_e", "the parts changed the URL's structure");
        assert!(
            !auth.contains(['/', '?', '#', '@']),
            "unencoded structure in {auth:?}"
        );
        let (u, p) = auth.split_once(':').expect("user:password");
        assert!(!u.contains(':') && !p.contains(':'));
        assert_eq!(decode(u), user.as_bytes());
        assert_eq!(decode(p), pw.as_bytes());
    });
}

const YAML_PIECES: &[&str] = &[
    "services:\n",
    "  web:\n",
    "    secrets: [a, b]\n",
    "    secrets:\n",
    "      - source: a\n",
    "      - {target: x}\n",
    "secrets:\n",
    "  a:\n",
    "    external: true\n",
    "    file: ./a\n",
    "    name: ${X:?y}\n",
    "  - \n",
    ": ",
    "[",
    "{",
    "\"",
    "&x ",
    "*x ",
    "\t",
];

#[test]
fn compose_files_never_panic_the_reader() {
    let mut g = Gen::new("compose_files_never_panic_the_reader");
    let m = Manifest::parse(
        "project = \"p\"\n[environments.e]\nbackend = \"swarm\"\n[secrets.a]\nkind = \"password\"\nservices = [\"web\"]\n",
    )
    .unwrap();
    bounded(3000, Duration::from_secs(5), |_| {
        let text = g.text(YAML_PIECES, 12);
        if let Ok(s) = stackfile::parse(&text) {
            let _ = crate::runtime::swarm::check_file(&m, "f.yml", &s);
            let _ = crate::runtime::compose::check_file(&m, "f.yml", &s);
        }
        let _ = crate::runtime::k8s::workloads(&text);
        let _ = stackfile::interpolate_checked(&text, &Default::default());
    });
}
