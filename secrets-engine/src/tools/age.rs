//! Encryption for backups through the `age` CLI (Debian's `age`; `rage` takes
//! the same flags). The `age` crate costs about 100 s of cold build, six times
//! this tool's, so the CLI is driven like docker or kubectl: plaintext only
//! through its stdin or stdout pipes, never a temporary file or argv.

use std::{
    ffi::OsString,
    io::{Read, Write},
    path::Path,
    process::Stdio,
};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::tools::runner::Tool;

/// How a backup is encrypted: to public keys, or with a passphrase typed on
/// the terminal (age reads it from the terminal itself, never from us).
#[derive(Debug, Clone)]
pub enum Seal {
    /// To these age public keys (`age1...`).
    Recipients(Vec<String>),
    /// With a passphrase age asks for on the terminal.
    Passphrase,
}

/// Finds `age` (or `$AGE`, e.g. `rage`).
pub fn find() -> Result<Tool> {
    Tool::find(
        "age",
        "AGE",
        "install it (Debian: `apt-get install age`; `rage` works too)",
    )
}

/// Whether age can ask for a passphrase: it reads the controlling terminal
/// itself, whatever stdin and stderr are.
pub fn has_terminal() -> bool {
    std::fs::File::open("/dev/tty").is_ok()
}

/// Encrypts `plain` and returns the ciphertext (binary age format).
pub fn encrypt(age: &Tool, plain: &[u8], seal: &Seal) -> Result<Vec<u8>> {
    let mut args: Vec<OsString> = vec!["--encrypt".into()];
    match seal {
        Seal::Recipients(keys) => {
            for k in keys {
                args.push("--recipient".into());
                args.push(k.into());
            }
        }
        Seal::Passphrase => {
            args.push("--passphrase".into());
        }
    }
    let out = pipe(age, &args, plain)?;
    if !out.ok {
        bail!(
            "age could not encrypt the backup: {}; check the recipients (age public keys start with age1, or ssh-ed25519/ssh-rsa keys)",
            message(&out.stderr)
        );
    }
    Ok(out.stdout.to_vec())
}

/// Decrypts the age file `from` with `identity` (or, with none, a passphrase
/// age asks for on the terminal) and returns the plaintext, wiped on drop.
pub fn decrypt(
    age: &Tool,
    from: &Path,
    shown: &str,
    identity: Option<&Path>,
) -> Result<Zeroizing<Vec<u8>>> {
    let ciphertext =
        std::fs::read(from).with_context(|| format!("cannot read the backup {shown}"))?;
    let mut args: Vec<OsString> = vec!["--decrypt".into()];
    if let Some(i) = identity {
        if !i.is_file() {
            bail!(
                "the identity file {} does not exist; pass --identity with the age key file the backup was made for",
                i.display()
            );
        }
        args.push("--identity".into());
        args.push(i.into());
    }
    let out = pipe(age, &args, &ciphertext)?;
    if !out.ok {
        let why = message(&out.stderr);
        let why = why.as_str();
        let hint = if why.contains("no identity matched") || why.contains("incorrect passphrase") {
            "this identity cannot open it: pass --identity with the key file of one of the backup's recipients (or type the right passphrase)"
        } else if why.contains("identity") || why.contains("passphrase") {
            "pass --identity with the age key file the backup was made for (a passphrase backup asks on a terminal)"
        } else {
            "the file is not a complete age file: it may be truncated or corrupted; use another copy of the backup"
        };
        bail!("cannot decrypt {shown}: {why}; {hint}");
    }
    Ok(out.stdout)
}

/// age's own message without its "report unexpected errors" footer.
fn message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("report unexpected or unhelpful errors"))
        .map(|l| {
            l.trim_start_matches("age: error: ")
                .trim_start_matches("age: ")
        })
        .collect();
    if lines.is_empty() {
        "age gave no message".into()
    } else {
        lines.join("; ")
    }
}

struct Piped {
    ok: bool,
    stdout: Zeroizing<Vec<u8>>,
    stderr: String,
}

/// Runs age with `input` on stdin (from a thread, so a large input never
/// blocks on a full stdout pipe) and collects stdout and stderr. age asks for
/// a passphrase on `/dev/tty` itself, so its prompt needs neither stream.
fn pipe(age: &Tool, args: &[OsString], input: &[u8]) -> Result<Piped> {
    let mut child = age
        .spawn(args)?
        .streams(Stdio::piped(), Stdio::piped(), Stdio::piped())
        .start()
        .with_context(|| format!("cannot start {}", Path::new(&age.bin).display()))?;
    let mut stdin = child.stdin.take().context("age's stdin")?;
    let mut stdout = child.stdout.take().context("age's stdout")?;
    let mut stderr = child.stderr.take();
    let (out, err) = std::thread::scope(|s| {
        s.spawn(move || {
            // age exits early on a bad key; its status and message say why.
            let _ = stdin.write_all(input);
        });
        let err = s.spawn(move || {
            let mut e = String::new();
            if let Some(r) = stderr.as_mut() {
                let _ = r.read_to_string(&mut e);
            }
            e
        });
        // Room for all of a decrypted output up front: a growing Vec would
        // leave copies of the plaintext behind in freed memory.
        let mut out = Zeroizing::new(Vec::with_capacity(input.len() + 4096));
        let read = stdout.read_to_end(&mut out);
        (read.map(|_| out), err.join().unwrap_or_default())
    });
    let status = child.wait().context("waiting for age")?;
    let stdout = out.context("reading age's output")?;
    Ok(Piped {
        ok: status.success(),
        stdout,
        stderr: err,
    })
}
