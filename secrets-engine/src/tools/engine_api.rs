//! The one Docker Engine API call the docker CLI has no command for:
//! `POST /secrets/{id}/update`, which changes a Swarm secret's labels (the
//! only field the API lets change; the data stays as it is). Spoken as plain
//! HTTP/1.0 (no chunked replies) over the engine's unix socket, so no HTTP client crate is built
//! for it. Only labels travel here, never a value.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::tools::docker::Docker;

/// The engine's unix socket: `DOCKER_HOST` when set, else the current
/// docker context's endpoint. A TCP or SSH endpoint is refused with the fix.
pub fn socket(docker: &Docker) -> Result<PathBuf> {
    let host = match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => docker
            .read(
                &[
                    "context",
                    "inspect",
                    "--format",
                    "{{.Endpoints.docker.Host}}",
                ],
                "",
            )
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
    };
    match host.strip_prefix("unix://") {
        Some(p) => Ok(PathBuf::from(p)),
        None => bail!(
            "the Docker endpoint is {host}; adopting secrets updates their labels through the Engine API, which this tool reaches only over a unix socket: run it on a manager node (DOCKER_HOST=unix:///var/run/docker.sock)"
        ),
    }
}

/// The status code and body of one request.
fn request(socket: &PathBuf, method: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the Docker engine at {}",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .context("the Docker engine did not answer")?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("the Docker engine gave no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok((code, body))
}

/// Replaces a secret's labels. `spec` is the secret's `Spec` as inspected, with
/// the new labels in it; `version` its `Version.Index`, which makes a
/// concurrent change fail instead of being overwritten.
pub fn update_secret(
    socket: &PathBuf,
    id: &str,
    version: u64,
    spec: &serde_json::Value,
) -> Result<()> {
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("{id:?} is not a Docker object ID");
    }
    let body = serde_json::to_vec(spec)?;
    let (code, text) = request(
        socket,
        "POST",
        &format!("/secrets/{id}/update?version={version}"),
        &body,
    )?;
    if code != 200 {
        let msg = serde_json::from_str::<serde_json::Value>(text.trim())
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        bail!("the Docker engine refused to update the labels of secret {id} (HTTP {code}: {msg})");
    }
    Ok(())
}
