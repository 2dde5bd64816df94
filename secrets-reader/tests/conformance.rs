//! Runs every case of `readers/conformance/*.json` against this crate, as the
//! TypeScript and Python suites do (`readers/typescript`, `readers/python`),
//! so the three readers cannot drift. Provider cases get a stand-in HTTP
//! server on 127.0.0.1 that serves the case's canned answers and checks each
//! request: path, headers, and the SigV4 `Authorization`, recomputed here
//! from what arrived on the wire with a from-scratch HMAC over `sha2`.
//!
//! Built only with both features (`required-features` in Cargo.toml):
//! `cargo test -p secrets-reader --all-features --test conformance`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use secrets_reader::{Error, Reader, Secret};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `readers/conformance/`, beside this crate.
fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../readers/conformance")
}

struct Case {
    file: String,
    hidden: Vec<String>,
    json: Value,
}

fn load_cases() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conformance_dir())
        .expect("readers/conformance/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let hidden: Vec<String> = doc["hidden"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for c in doc["cases"].as_array().into_iter().flatten() {
            out.push(Case {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                hidden: hidden.clone(),
                json: c.clone(),
            });
        }
    }
    out
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

// ---- HMAC-SHA256 and SigV4, written out to check aws-sigv4's output ----

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().to_vec()
}

// ---- the stand-in server ----

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

struct State {
    routes: Vec<Value>,
    hits: Vec<usize>,
    failures: Vec<String>,
}

/// Serves one case's routes until dropped.
struct StandIn {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    fn start(routes: &[Value]) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            routes: routes.to_vec(),
            hits: vec![0; routes.len()],
            failures: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(req) = read_request(&stream) else {
                    continue;
                };
                let (status, headers, body) = answer(&mut st.lock().unwrap(), &req);
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = stream.write_all(out.as_bytes());
                let _ = stream.write_all(&body);
                let _ = stream.flush();
            }
        });
        StandIn {
            url: format!("http://127.0.0.1:{port}"),
            state,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(state: &mut State, req: &Request) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let body_json: Option<Value> = serde_json::from_slice(&req.body).ok();
    let found = state.routes.iter().position(|r| {
        s(r, "method") == Some(&req.method)
            && s(r, "path") == Some(&req.path)
            && r.get("body").is_none_or(|b| body_json.as_ref() == Some(b))
    });
    let Some(i) = found else {
        state.failures.push(format!(
            "unexpected request {} {} {}",
            req.method,
            req.path,
            String::from_utf8_lossy(&req.body)
        ));
        return (599, vec![], b"no route".to_vec());
    };
    state.hits[i] += 1;
    let route = state.routes[i].clone();
    let where_ = format!("{} {}", req.method, req.path);
    if let Some(want) = route.get("headers").and_then(Value::as_object) {
        for (k, v) in want {
            let got = req.headers.get(k).map(String::as_str);
            if got != v.as_str() {
                state
                    .failures
                    .push(format!("{where_}: header {k} is {got:?}, want {v}"));
            }
        }
    }
    for k in route
        .get("absent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(k) = k.as_str()
            && req.headers.contains_key(k)
        {
            state
                .failures
                .push(format!("{where_}: header {k} should be absent"));
        }
    }
    if let Some(want) = route.get("sigv4")
        && let Err(e) = check_sigv4(want, req)
    {
        state.failures.push(format!("{where_}: {e}"));
    }
    let responses = route["responses"].as_array().unwrap();
    let r = &responses[(state.hits[i] - 1).min(responses.len() - 1)];
    let status = r["status"].as_u64().unwrap() as u16;
    let mut headers: Vec<(String, String)> = r
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(json) = r.get("json") {
        headers.push(("content-type".into(), "application/json".into()));
        (status, headers, json.to_string().into_bytes())
    } else {
        let body = s(r, "body").unwrap_or_default().as_bytes().to_vec();
        (status, headers, body)
    }
}

/// The `Authorization` header has the wanted shape and its signature verifies
/// over the request as received.
fn check_sigv4(want: &Value, req: &Request) -> Result<(), String> {
    let (ak, sk, region, service, signed) = (
        s(want, "access_key").unwrap(),
        s(want, "secret_key").unwrap(),
        s(want, "region").unwrap(),
        s(want, "service").unwrap(),
        s(want, "signed_headers").unwrap(),
    );
    let auth = req
        .headers
        .get("authorization")
        .cloned()
        .unwrap_or_default();
    let date = req.headers.get("x-amz-date").cloned().unwrap_or_default();
    let shape_ok = date.len() == 16
        && date.as_bytes()[8] == b'T'
        && date.ends_with('Z')
        && date[..8].bytes().all(|b| b.is_ascii_digit())
        && date[9..15].bytes().all(|b| b.is_ascii_digit());
    let scope = format!(
        "{}/{region}/{service}/aws4_request",
        date.get(..8).unwrap_or("")
    );
    let prefix =
        format!("AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature=");
    let sig = auth.strip_prefix(&prefix);
    let sig_ok = sig.is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !shape_ok || !sig_ok {
        return Err(format!(
            "Authorization {auth:?} (x-amz-date {date}) is not the SigV4 shape wanted"
        ));
    }
    let mut canonical = format!("{}\n{}\n\n", req.method, req.path);
    for name in signed.split(';') {
        let v = req.headers.get(name).map(String::as_str).unwrap_or("");
        let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
        canonical.push_str(&format!("{name}:{v}\n"));
    }
    canonical.push_str(&format!("\n{signed}\n{}", sha256_hex(&req.body)));
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut key = hmac(format!("AWS4{sk}").as_bytes(), &date.as_bytes()[..8]);
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, to_sign.as_bytes()));
    if sig != Some(expected.as_str()) {
        return Err(format!("SigV4 signature does not verify: {auth}"));
    }
    Ok(())
}

// ---- running a case ----

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "secrets-reader-conformance-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("secrets")).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn closed_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
}

fn write_files(root: &Path, files: &Value, expand: &dyn Fn(&str) -> String) {
    for (rel, spec) in files.as_object().into_iter().flatten() {
        let path = root.join(expand(rel));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes = match spec {
            Value::String(text) => text.as_bytes().to_vec(),
            _ if spec.get("dir").is_some() => {
                std::fs::create_dir_all(&path).unwrap();
                continue;
            }
            _ if spec.get("hex").is_some() => unhex(s(spec, "hex").unwrap()),
            _ => s(spec, "repeat")
                .unwrap()
                .repeat(spec["count"].as_u64().unwrap() as usize)
                .into_bytes(),
        };
        std::fs::write(&path, bytes).unwrap();
    }
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidName { .. } => "invalid_name",
        Error::Conflict { .. } => "conflict",
        Error::NotFound { .. } => "not_found",
        Error::CannotBuild { .. } => "cannot_build",
        Error::Empty { .. } => "empty",
        Error::NotUtf8 { .. } => "not_utf8",
        Error::Io { .. } => "io",
        Error::InvalidVar { .. } => "invalid_var",
        Error::Provider { .. } => "provider",
        _ => "unknown",
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn run_case(case: &Case) -> Result<(), String> {
    let c = &case.json;
    let tmp = TempDir::new();
    let root = tmp.0.clone();
    let dir = root.join("secrets");
    let stand = c
        .get("http")
        .and_then(Value::as_array)
        .map(|routes| StandIn::start(routes));
    let mut vars = vec![
        ("{root}", root.display().to_string()),
        ("{dir}", dir.display().to_string()),
        ("{closed}", closed_url()),
    ];
    if let Some(st) = &stand {
        vars.push(("{http}", st.url.clone()));
    }
    let expand = move |text: &str| {
        let mut out = text.to_owned();
        for (k, v) in &vars {
            out = out.replace(k, v);
        }
        out
    };
    if let Some(files) = c.get("files") {
        write_files(&root, files, &expand);
    }
    let env: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(
        c.get("env")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), expand(v.as_str().unwrap())))
            .collect(),
    ));
    let env2 = env.clone();
    let reader =
        Reader::new(&dir).with_env(move |k| env2.lock().unwrap().get(k).map(OsString::from));
    for (i, step) in c["steps"].as_array().unwrap().iter().enumerate() {
        let at = format!("step {}", i + 1);
        if let Some(ms) = step.get("sleep_ms").and_then(Value::as_u64) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if let Some(files) = step.get("write") {
            write_files(&root, files, &expand);
        }
        if let Some(set) = step.get("set_env").and_then(Value::as_object) {
            for (k, v) in set {
                env.lock()
                    .unwrap()
                    .insert(k.clone(), expand(v.as_str().unwrap()));
            }
        }
        let Some(call) = s(step, "call") else {
            continue;
        };
        let want = step.get("expect").cloned().unwrap_or(Value::Null);
        let want_error = s(&want, "error");
        let got: Result<Secret, Error> = match call {
            "get" => reader.get(s(step, "name").unwrap()),
            "database_url" => reader.database_url(),
            "redis_url" => reader.redis_url(),
            other => return Err(format!("{at}: unknown call {other}")),
        };
        let got = match (got, want_error) {
            (Ok(secret), Some("not_utf8")) => secret.expose_str().map(|_| secret.clone()),
            (other, _) => other,
        };
        match (got, want_error) {
            (Err(e), Some(want_kind)) => {
                let msg = e.to_string();
                check(kind(&e) == want_kind, || {
                    format!("{at}: wanted a {want_kind} error, got {e:?}: {msg}")
                })?;
                if let Some(m) = s(&want, "message") {
                    let m = expand(m);
                    check(msg == m, || {
                        format!("{at}: message\n  got  {msg}\n  want {m}")
                    })?;
                }
                if let Some(p) = s(&want, "starts_with") {
                    let p = expand(p);
                    check(msg.starts_with(&p), || {
                        format!("{at}: message {msg:?} does not start with {p:?}")
                    })?;
                }
                for part in want
                    .get("contains")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let p = expand(part.as_str().unwrap());
                    check(msg.contains(&p), || {
                        format!("{at}: message {msg:?} does not contain {p:?}")
                    })?;
                }
                for shown in [msg.clone(), format!("{e:?}"), format!("{e:#?}")] {
                    for h in &case.hidden {
                        check(!shown.contains(h), || {
                            format!("{at}: {h:?} shown in {shown}")
                        })?;
                    }
                }
            }
            (Ok(_), Some(want_kind)) => {
                return Err(format!("{at}: wanted a {want_kind} error, got a value"));
            }
            (Err(e), None) => return Err(format!("{at}: unexpected error {e:?}: {e}")),
            (Ok(secret), None) => {
                if let Some(v) = s(&want, "value") {
                    let v = expand(v);
                    let got = secret.expose_str().map_err(|e| format!("{at}: {e}"))?;
                    check(got == v, || format!("{at}: value {got:?}, want {v:?}"))?;
                }
                if let Some(h) = s(&want, "hex") {
                    check(hex(secret.expose()) == h, || {
                        format!("{at}: bytes {}, want {h}", hex(secret.expose()))
                    })?;
                }
                if let Some(src) = s(&want, "source") {
                    let src = expand(src);
                    let got = secret.source().to_string();
                    check(got == src, || format!("{at}: source {got:?}, want {src:?}"))?;
                }
                if let Some(f) = s(&want, "fingerprint") {
                    check(secret.fingerprint() == f, || {
                        format!("{at}: fingerprint {}", secret.fingerprint())
                    })?;
                }
                if let Some(n) = want.get("length").and_then(Value::as_u64) {
                    check(secret.len() as u64 == n, || {
                        format!("{at}: length {}", secret.len())
                    })?;
                }
                check(secret.to_string() == "<redacted>", || {
                    format!("{at}: Display")
                })?;
                let debug = format!("{secret:?}");
                check(
                    debug
                        == format!(
                            "Secret {{ source: {}, value: <redacted> }}",
                            secret.source()
                        ),
                    || format!("{at}: Debug {debug}"),
                )?;
                for shown in [debug, format!("{:#?}", Some(&secret))] {
                    for h in &case.hidden {
                        check(!shown.contains(h), || {
                            format!("{at}: {h:?} shown in {shown}")
                        })?;
                    }
                }
            }
        }
    }
    if let Some(st) = &stand {
        let state = st.state.lock().unwrap();
        check(state.failures.is_empty(), || {
            format!("stand-in checks: {:#?}", state.failures)
        })?;
        for (i, route) in state.routes.iter().enumerate() {
            if let Some(n) = route.get("count").and_then(Value::as_u64) {
                check(state.hits[i] as u64 == n, || {
                    format!(
                        "{} requests to {} {}, want {n}",
                        state.hits[i],
                        s(route, "method").unwrap_or(""),
                        s(route, "path").unwrap_or("")
                    )
                })?;
            }
        }
    }
    Ok(())
}

#[test]
fn every_conformance_case() {
    let cases = load_cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        let name = s(&case.json, "name").unwrap_or("?");
        if let Err(e) = run_case(case) {
            failed.push(format!("{}: {name}: {e}", case.file));
        }
    }
    // Straight to the real stderr, past libtest's capture: the count shows
    // in a normal run.
    let _ = writeln!(
        std::io::stderr(),
        "conformance (rust): {} cases, {} passed, {} failed",
        cases.len(),
        cases.len() - failed.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} conformance cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// The SigV4 check above is itself right: it verifies AWS's post-vanilla
/// vector (readers/conformance/sigv4.json).
#[test]
fn sigv4_checker_verifies_the_aws_vector() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(conformance_dir().join("sigv4.json")).unwrap(),
    )
    .unwrap();
    for v in doc["vectors"].as_array().unwrap() {
        let mut headers: HashMap<String, String> = v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap().to_owned()))
            .collect();
        headers.insert("x-amz-date".into(), s(v, "amz_date").unwrap().to_owned());
        headers.insert(
            "authorization".into(),
            s(v, "authorization").unwrap().to_owned(),
        );
        let req = Request {
            method: s(v, "method").unwrap().to_owned(),
            path: s(v, "path").unwrap().to_owned(),
            headers,
            body: s(v, "body").unwrap().as_bytes().to_vec(),
        };
        let want = serde_json::json!({
            "access_key": v["access_key"], "secret_key": v["secret_key"],
            "region": v["region"], "service": v["service"],
            "signed_headers": "host;x-amz-date",
        });
        check_sigv4(&want, &req).unwrap();
        let mut bad = want.clone();
        bad["secret_key"] = "wrong".into();
        assert!(check_sigv4(&bad, &req).is_err());
    }
}
