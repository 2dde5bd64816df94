//! What the `vault` and `aws` providers share: the HTTP agent, the value
//! cache, reading response bodies into wiped buffers, and wiping parsed JSON.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use crate::{Error, MAX_SECRET_LEN, Reader, Secret, Wiped};

/// Default of `SECRETS_CACHE_SECONDS`.
pub(crate) const DEFAULT_CACHE_SECONDS: &str = "60";

/// Connect, send and receive together: a store that does not answer within
/// this time is an error rather than a hung service.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body read: a secret of [`MAX_SECRET_LEN`] bytes, JSON
/// escaped or base64 encoded, plus the envelope.
const MAX_BODY: u64 = 8 * MAX_SECRET_LEN;

struct Entry {
    secret: Secret,
    fetched: Instant,
}

type Cache = Mutex<HashMap<String, Entry>>;

/// The agent (connection pool) and the cache of one [`Reader`]. Cached
/// [`Secret`]s are wiped when they expire, are replaced, or the last reader
/// sharing the cache is dropped.
pub(crate) struct Remote {
    agent: OnceLock<ureq::Agent>,
    cache: Arc<Cache>,
}

impl Remote {
    /// A cache of its own.
    pub(crate) fn new() -> Self {
        Remote {
            agent: OnceLock::new(),
            cache: Arc::default(),
        }
    }

    /// The process-wide cache used by [`Reader::from_env`] and the free
    /// functions, so that `secrets_reader::get` caches too.
    pub(crate) fn shared() -> Self {
        static SHARED: OnceLock<Arc<Cache>> = OnceLock::new();
        Remote {
            agent: OnceLock::new(),
            cache: SHARED.get_or_init(Arc::default).clone(),
        }
    }

    /// Never follows redirects: a redirect would carry the token elsewhere.
    pub(crate) fn agent(&self) -> &ureq::Agent {
        self.agent.get_or_init(|| {
            ureq::Agent::config_builder()
                .timeout_global(Some(TIMEOUT))
                .http_status_as_error(false)
                .max_redirects(0)
                .user_agent("secrets-reader")
                .build()
                .into()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `$SECRETS_CACHE_SECONDS` (default 60; 0 turns the cache off).
fn cache_ttl(reader: &Reader) -> Result<Duration, Error> {
    let secs = reader.number(
        "SECRETS_CACHE_SECONDS",
        DEFAULT_CACHE_SECONDS,
        0..=u32::MAX,
        "is not a number of seconds",
    )?;
    Ok(Duration::from_secs(secs.parse().unwrap_or(0)))
}

/// The cached value under `key` while it is younger than the cache time,
/// else `fetch()`'s, which is cached when found. Errors are not cached, and a
/// failed re-read never falls back to an expired value.
pub(crate) fn cached_or_fetch(
    reader: &Reader,
    key: String,
    fetch: impl FnOnce() -> Result<Option<Secret>, Error>,
) -> Result<Option<Secret>, Error> {
    let ttl = cache_ttl(reader)?;
    {
        let mut cache = reader.remote.lock();
        match cache.get(&key) {
            Some(e) if e.fetched.elapsed() < ttl => return Ok(Some(e.secret.clone())),
            Some(_) => {
                cache.remove(&key); // dropped, so wiped
            }
            None => {}
        }
    }
    let got = fetch()?;
    if let Some(secret) = &got
        && !ttl.is_zero()
    {
        reader.remote.lock().insert(
            key,
            Entry {
                secret: secret.clone(),
                fetched: Instant::now(),
            },
        );
    }
    Ok(got)
}

/// Reads a response body (at most [`MAX_BODY`] bytes) into a buffer that is
/// wiped on drop, growing it by copying into a fresh buffer and wiping the
/// old one, so no reallocation leaves an unwiped copy behind.
pub(crate) fn read_body(body: &mut ureq::Body) -> io::Result<Wiped> {
    let hint = body.content_length().unwrap_or(0).min(MAX_BODY) as usize;
    let mut buf = Wiped(Vec::with_capacity(hint.max(1024)));
    let mut reader = body.with_config().limit(MAX_BODY).reader();
    let mut chunk = [0u8; 8192];
    let result = loop {
        match reader.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if buf.0.capacity() - buf.0.len() < n {
                    let mut bigger = Wiped(Vec::with_capacity((buf.0.len() + n) * 2));
                    bigger.0.extend_from_slice(&buf.0);
                    buf = bigger; // the old buffer is wiped here
                }
                buf.0.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    chunk.zeroize();
    result.map(|()| buf)
}

/// Parses a JSON body; `None` when it is not JSON.
pub(crate) fn parse(body: &Wiped) -> Option<Json> {
    serde_json::from_slice(&body.0).ok().map(Json)
}

/// A parsed JSON document whose strings are wiped on drop.
pub(crate) struct Json(pub(crate) serde_json::Value);

impl Drop for Json {
    fn drop(&mut self) {
        fn wipe(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::String(s) => s.zeroize(),
                serde_json::Value::Array(a) => a.iter_mut().for_each(wipe),
                serde_json::Value::Object(o) => o.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}

/// Copies `text` into a wiped buffer of exactly its size.
pub(crate) fn wiped_copy(text: &[u8]) -> Wiped {
    let mut out = Wiped(Vec::with_capacity(text.len()));
    out.0.extend_from_slice(text);
    out
}

/// `text` cut to 200 characters with every occurrence of each of `hide`
/// replaced by `<redacted>`: error text from a server is shown, but never a
/// token or value it might echo.
pub(crate) fn scrub(text: &str, hide: &[&[u8]]) -> String {
    let mut out: String = text.chars().take(200).collect();
    for h in hide {
        if let Ok(h) = std::str::from_utf8(h)
            && !h.is_empty()
        {
            out = out.replace(h, "<redacted>");
        }
    }
    out
}

/// Splits `http(s)://host[:port][/base]` into the authority and the base
/// path (without a trailing `/`).
pub(crate) fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((scheme, authority, path))
}
