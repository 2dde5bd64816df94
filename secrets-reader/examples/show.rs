//! `show NAME...`: print where each secret comes from and its fingerprint,
//! never its value.
//!
//! Output, one line per name: `NAME<TAB>SOURCE<TAB>FINGERPRINT`, or
//! `NAME<TAB>error: MESSAGE`; exit status 1 if any name failed, 2 on usage
//! errors. `database_url` and `redis_url` go through the URL builders.

use std::process::ExitCode;

use secrets_reader::Reader;

fn main() -> ExitCode {
    let names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() || names.iter().any(|n| n == "-h" || n == "--help") {
        eprintln!("usage: show NAME...");
        eprintln!("prints NAME<TAB>SOURCE<TAB>FINGERPRINT for each secret (never the value)");
        return ExitCode::from(2);
    }
    let reader = Reader::from_env();
    let mut failed = false;
    for name in &names {
        let result = match name.as_str() {
            "database_url" => reader.database_url(),
            "redis_url" => reader.redis_url(),
            _ => reader.get(name),
        };
        match result {
            Ok(secret) => println!("{name}\t{}\t{}", secret.source(), secret.fingerprint()),
            Err(err) => {
                println!("{name}\terror: {err}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
