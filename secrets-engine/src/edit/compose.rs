//! Editing a compose file's text so that services read secrets from files:
//! `<NAME>: ...` in a service's `environment:` becomes
//! `<NAME>_FILE: /run/secrets/<name>`, the service gets a `secrets:` entry
//! and the top level a definition. The text is edited line by line, never
//! re-serialised, so comments, anchors, order and layout stay as they were.
//! Pure: text in, text and a list of changes out.

use std::collections::BTreeSet;

use anyhow::{Result, bail};

use crate::edit::stackfile;

/// The edited text and each change, in words (never a value).
#[derive(Debug, Default)]
pub struct Edit {
    /// The whole file's new text.
    pub text: String,
    /// What changed, one line each (empty when nothing did).
    pub changes: Vec<String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn content(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r']).trim()
}

fn is_code(line: &str) -> bool {
    let c = content(line);
    !c.is_empty() && !c.starts_with('#')
}

/// `key` of a `key:` or `key: value` line.
fn key_of(line: &str) -> Option<&str> {
    let c = content(line);
    if c.starts_with('-') || c.starts_with('#') {
        return None;
    }
    let (k, _) = c.split_once(':')?;
    Some(k.trim().trim_matches(['"', '\'']))
}

/// The value after `key:` on the same line, without a trailing comment.
fn inline_value(line: &str) -> &str {
    let c = content(line);
    let v = c.split_once(':').map(|x| x.1).unwrap_or("").trim();
    v.split(" #").next().unwrap_or("").trim()
}

/// The end (exclusive) of the block that starts at `start`: the first code
/// line after it indented no deeper than `start`'s own line.
fn block_end(lines: &[String], start: usize) -> usize {
    let ind = indent(&lines[start]);
    (start + 1..lines.len())
        .find(|&i| is_code(&lines[i]) && indent(&lines[i]) <= ind)
        .unwrap_or(lines.len())
}

/// The last code line of `lines[from..to]`, else `from - 1`.
fn last_code(lines: &[String], from: usize, to: usize) -> usize {
    (from..to)
        .rev()
        .find(|&i| is_code(&lines[i]))
        .unwrap_or(from - 1)
}

/// The top-level `key:` line.
fn top(lines: &[String], key: &str) -> Option<usize> {
    lines
        .iter()
        .position(|l| indent(l) == 0 && key_of(l) == Some(key))
}

/// The child lines (first code line's indent) of the block at `start`.
fn children(lines: &[String], start: usize) -> Vec<usize> {
    let end = block_end(lines, start);
    let Some(first) = (start + 1..end).find(|&i| is_code(&lines[i])) else {
        return Vec::new();
    };
    let ind = indent(&lines[first]);
    (first..end)
        .filter(|&i| is_code(&lines[i]) && indent(&lines[i]) == ind)
        .collect()
}

/// The variable an `environment:` line sets (`NAME: v`, `- NAME=v`, `- NAME`),
/// and whether it is a list item.
fn env_var(line: &str) -> (bool, &str) {
    let c = content(line);
    let (list, body) = match c.strip_prefix('-') {
        Some(b) => (true, b.trim().trim_matches(['"', '\''])),
        None => (false, c),
    };
    (
        list,
        body.split([':', '='])
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']),
    )
}

/// The names after `sigil` (`&` for anchors, `*` for aliases) on a line,
/// outside its comment: a YAML anchor or alias starts a node, so it follows
/// a space, `[`, `{`, `,` or the line's start.
fn marks(line: &str, sigil: char) -> Vec<&str> {
    let c = content(line);
    let c = c.split(" #").next().unwrap_or("");
    let mut out = Vec::new();
    for (i, _) in c.match_indices(sigil) {
        let before = c[..i].chars().last();
        if !matches!(before, None | Some(' ' | '[' | '{' | ',')) {
            continue;
        }
        let name: &str = c[i + 1..]
            .split(|ch: char| ch.is_whitespace() || matches!(ch, ',' | ']' | '}'))
            .next()
            .unwrap_or("");
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// Refuses, before any change, a secret's variable inside an anchored block
/// that an alias reuses (`environment: *backend-env`, `<<: *backend-env`):
/// editing the text there would change every user of the anchor, and the
/// services that take it through the alias would not get the secret.
fn refuse_shared_anchors(file: &str, lines: &[String], secrets: &[String]) -> Result<()> {
    let vars: Vec<String> = secrets.iter().map(|s| s.to_ascii_uppercase()).collect();
    for (i, line) in lines.iter().enumerate() {
        if !is_code(line) {
            continue;
        }
        for anchor in marks(line, '&') {
            let used: Vec<String> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| is_code(l) && marks(l, '*').contains(&anchor))
                .map(|(j, _)| format!("{file}:{}", j + 1))
                .collect();
            if used.is_empty() {
                continue;
            }
            let held = (i..block_end(lines, i))
                .filter(|&j| is_code(&lines[j]))
                .map(|j| (j, env_var(&lines[j]).1.to_string()))
                .find(|(_, v)| vars.contains(v));
            if let Some((j, var)) = held {
                bail!(
                    "{file}:{}: {var} is set inside the anchor &{anchor} ({file}:{}), which {} reuse{} through *{anchor}; the editor does not edit through anchors and aliases (the services that take it through the alias would not get the secret): make the changes by hand (<NAME>_FILE: /run/secrets/<name> and a secrets: entry in each service that uses the anchor)",
                    j + 1,
                    i + 1,
                    used.join(", "),
                    if used.len() == 1 { "s" } else { "" }
                );
            }
        }
    }
    Ok(())
}

/// Rewrites `text` so that every service reading one of `secrets` (manifest
/// names) from an environment variable named like it reads the file instead.
/// `def` gives a top-level definition's lines under `<name>:`. New lines take
/// the file's own indentation (that of its services, or of the definitions
/// already there). A secret's variable inside an anchor that an alias reuses
/// is refused before any change, naming the anchor's `file:line`. The result
/// is parsed again and must say what was intended.
pub fn edit(
    file: &str,
    text: &str,
    secrets: &[String],
    def: &dyn Fn(&str) -> Vec<String>,
) -> Result<Edit> {
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    if lines.last().is_some_and(|l| !l.ends_with('\n')) {
        let last = lines.len() - 1;
        lines[last].push_str(eol);
    }
    let mut out = Edit::default();
    let Some(svc_top) = top(&lines, "services") else {
        out.text = text.to_string();
        return Ok(out);
    };
    refuse_shared_anchors(file, &lines, secrets)?;
    // The file's own indentation step: that of the services under `services:`.
    let unit = children(&lines, svc_top)
        .first()
        .map(|&i| indent(&lines[i]))
        .filter(|&n| n > 0)
        .unwrap_or(2);
    let mut wanted: Vec<(String, String)> = Vec::new();
    // Bottom-up, so inserted lines do not move the services still to edit.
    for h in children(&lines, svc_top).into_iter().rev() {
        let Some(svc) = key_of(&lines[h]).map(str::to_string) else {
            continue;
        };
        let mut changes = Vec::new();
        let names = env_lines(&mut lines, h, &svc, secrets, &mut changes);
        if !names.is_empty() {
            add_service_secrets(&mut lines, h, &svc, &names, eol, unit, &mut changes);
            wanted.extend(names.into_iter().map(|n| (svc.clone(), n)));
        }
        changes.append(&mut out.changes);
        out.changes = changes;
    }
    let needed: BTreeSet<&str> = wanted.iter().map(|(_, n)| n.as_str()).collect();
    add_definitions(&mut lines, &needed, def, eol, unit, &mut out.changes);
    out.text = lines.concat();
    if !text.ends_with('\n') && out.text.ends_with(eol) && out.changes.is_empty() {
        out.text = text.to_string();
    }
    let parsed = stackfile::parse(&out.text).map_err(|e| {
        anyhow::anyhow!(
            "{file}: editing the text gave invalid YAML ({e:#}); make the changes by hand"
        )
    })?;
    for (svc, n) in &wanted {
        let mounted = parsed.services.get(svc).is_some_and(|r| r.contains(n));
        if !mounted || !parsed.secrets.contains_key(n) {
            bail!(
                "{file}: could not add the secret {n} to service {svc} by editing the text; make the changes printed above by hand"
            );
        }
    }
    Ok(out)
}

/// Replaces the service's environment variables named like a secret with
/// `<NAME>_FILE`; returns the secrets it now needs.
fn env_lines(
    lines: &mut [String],
    h: usize,
    svc: &str,
    secrets: &[String],
    changes: &mut Vec<String>,
) -> Vec<String> {
    let mut names = Vec::new();
    let Some(env) = children(lines, h)
        .into_iter()
        .find(|&i| key_of(&lines[i]) == Some("environment"))
    else {
        return names;
    };
    // `environment: &name` anchors the block below it: still a block.
    let inline = inline_value(&lines[env]);
    let anchor_only = inline.starts_with('&') && !inline.contains(char::is_whitespace);
    if !inline.is_empty() && !anchor_only {
        let mentioned: Vec<&String> = secrets
            .iter()
            .filter(|s| lines[env].contains(&s.to_ascii_uppercase()))
            .collect();
        if !mentioned.is_empty() {
            changes.push(format!(
                "service {svc}: its environment is written on one line; change it by hand (use <NAME>_FILE: /run/secrets/<name>)"
            ));
        }
        return names;
    }
    let end = block_end(lines, env);
    for line in &mut lines[env + 1..end] {
        if !is_code(line) {
            continue;
        }
        let (list, var) = env_var(line);
        let var = var.to_string();
        let Some(name) = secrets.iter().find(|s| s.to_ascii_uppercase() == var) else {
            continue;
        };
        let eol = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
        let pad = " ".repeat(indent(line));
        *line = if list {
            format!("{pad}- {var}_FILE=/run/secrets/{name}{eol}")
        } else {
            format!("{pad}{var}_FILE: /run/secrets/{name}{eol}")
        };
        changes.push(format!(
            "service {svc}: environment {var} -> {var}_FILE: /run/secrets/{name}"
        ));
        names.push(name.clone());
    }
    names
}

/// Adds `names` to the service's `secrets:` (flow or block list), or adds the key.
fn add_service_secrets(
    lines: &mut Vec<String>,
    h: usize,
    svc: &str,
    names: &[String],
    eol: &str,
    unit: usize,
    changes: &mut Vec<String>,
) {
    let kids = children(lines, h);
    let prop = kids
        .first()
        .map(|&i| indent(&lines[i]))
        .unwrap_or(indent(&lines[h]) + unit);
    let step = " ".repeat(unit);
    let pad = " ".repeat(prop);
    let Some(sec) = kids
        .iter()
        .copied()
        .find(|&i| key_of(&lines[i]) == Some("secrets"))
    else {
        let at = last_code(lines, h + 1, block_end(lines, h)) + 1;
        let mut add = vec![format!("{pad}secrets:{eol}")];
        add.extend(names.iter().map(|n| format!("{pad}{step}- {n}{eol}")));
        lines.splice(at..at, add);
        changes.push(format!("service {svc}: add secrets: {}", names.join(", ")));
        return;
    };
    let has = |text: &str, n: &str| {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .any(|w| w == n)
    };
    let inline = inline_value(&lines[sec]).to_string();
    if inline.starts_with('[') {
        let missing: Vec<&String> = names.iter().filter(|n| !has(&inline, n)).collect();
        if let Some(close) = lines[sec].rfind(']')
            && !missing.is_empty()
        {
            let sep = if inline.trim_start_matches('[').trim().starts_with(']') {
                ""
            } else {
                ", "
            };
            let add: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            lines[sec].insert_str(close, &format!("{sep}{}", add.join(", ")));
        }
    } else {
        let end = block_end(lines, sec);
        let block: String = lines[sec + 1..end].concat();
        let item = (sec + 1..end)
            .find(|&i| is_code(&lines[i]))
            .map(|i| indent(&lines[i]))
            .unwrap_or(prop + unit);
        let at = last_code(lines, sec + 1, end) + 1;
        let add: Vec<String> = names
            .iter()
            .filter(|n| !has(&block, n))
            .map(|n| format!("{}- {n}{eol}", " ".repeat(item)))
            .collect();
        lines.splice(at..at, add);
    }
    changes.push(format!(
        "service {svc}: add to its secrets: {}",
        names.join(", ")
    ));
}

/// Adds the top-level definitions that are missing.
fn add_definitions(
    lines: &mut Vec<String>,
    needed: &BTreeSet<&str>,
    def: &dyn Fn(&str) -> Vec<String>,
    eol: &str,
    unit: usize,
    changes: &mut Vec<String>,
) {
    if needed.is_empty() {
        return;
    }
    // The existing definitions' indentation, else the file's own step.
    let (name_ind, prop_ind) = top(lines, "secrets")
        .and_then(|s| {
            let kids = children(lines, s);
            let first = *kids.first()?;
            let prop = (first + 1..block_end(lines, first))
                .find(|&j| is_code(&lines[j]))
                .map(|j| indent(&lines[j]))
                .unwrap_or(indent(&lines[first]) + unit);
            Some((indent(&lines[first]), prop))
        })
        .unwrap_or((unit, 2 * unit));
    let block = |n: &str| {
        let mut out = vec![format!("{}{n}:{eol}", " ".repeat(name_ind))];
        out.extend(
            def(n)
                .into_iter()
                .map(|l| format!("{}{l}{eol}", " ".repeat(prop_ind))),
        );
        out
    };
    match top(lines, "secrets") {
        Some(s) => {
            let have: Vec<String> = children(lines, s)
                .into_iter()
                .filter_map(|i| key_of(&lines[i]).map(str::to_string))
                .collect();
            let at = last_code(lines, s + 1, block_end(lines, s)) + 1;
            let add: Vec<String> = needed
                .iter()
                .filter(|n| !have.iter().any(|h| h == *n))
                .flat_map(|n| {
                    changes.push(format!("top-level secrets: define {n}"));
                    block(n)
                })
                .collect();
            lines.splice(at..at, add);
        }
        None => {
            lines.push(format!("{eol}secrets:{eol}"));
            for n in needed {
                changes.push(format!("top-level secrets: define {n}"));
                lines.extend(block(n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_def(n: &str) -> Vec<String> {
        vec![format!("file: ./secrets/develop/{n}")]
    }

    #[test]
    fn environment_becomes_file_and_layout_stays() {
        let text = "# my stack\nservices:\n  db:\n    image: postgres  # pinned\n    environment:\n      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}\n      POSTGRES_DB: app\n\n  api:\n    image: api\n    environment:\n      - POSTGRES_PASSWORD=${POSTGRES_PASSWORD}\n      - JWT_SECRET\n    secrets: [other]\nvolumes:\n  data:\nsecrets:\n  other:\n    file: ./o\n";
        let e = edit(
            "c.yml",
            text,
            &["postgres_password".into(), "jwt_secret".into()],
            &file_def,
        )
        .unwrap();
        assert_eq!(
            e.text,
            "# my stack\nservices:\n  db:\n    image: postgres  # pinned\n    environment:\n      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password\n      POSTGRES_DB: app\n    secrets:\n      - postgres_password\n\n  api:\n    image: api\n    environment:\n      - POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password\n      - JWT_SECRET_FILE=/run/secrets/jwt_secret\n    secrets: [other, postgres_password, jwt_secret]\nvolumes:\n  data:\nsecrets:\n  other:\n    file: ./o\n  jwt_secret:\n    file: ./secrets/develop/jwt_secret\n  postgres_password:\n    file: ./secrets/develop/postgres_password\n"
        );
        // A second pass finds nothing to change.
        let again = edit(
            "c.yml",
            &e.text,
            &["postgres_password".into(), "jwt_secret".into()],
            &file_def,
        )
        .unwrap();
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert_eq!(again.text, e.text);
    }

    #[test]
    fn block_lists_and_crlf_are_kept() {
        let text = "services:\r\n  web:\r\n    environment:\r\n      API_KEY: x\r\n    secrets:\r\n      - source: a\r\n        target: a\r\n";
        let e = edit("c.yml", text, &["api_key".into()], &file_def).unwrap();
        assert_eq!(
            e.text,
            "services:\r\n  web:\r\n    environment:\r\n      API_KEY_FILE: /run/secrets/api_key\r\n    secrets:\r\n      - source: a\r\n        target: a\r\n      - api_key\r\n\r\nsecrets:\r\n  api_key:\r\n    file: ./secrets/develop/api_key\r\n"
        );
    }

    #[test]
    fn four_space_files_keep_their_indentation() {
        let text = "services:\n    db:\n        image: postgres\n        environment:\n            POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}\n    api:\n        image: api\n        environment:\n            - JWT_SECRET=${JWT_SECRET}\n        secrets:\n            - other\nsecrets:\n    other:\n        file: ./o\n";
        let e = edit(
            "c.yml",
            text,
            &["postgres_password".into(), "jwt_secret".into()],
            &file_def,
        )
        .unwrap();
        assert_eq!(
            e.text,
            "services:\n    db:\n        image: postgres\n        environment:\n            POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password\n        secrets:\n            - postgres_password\n    api:\n        image: api\n        environment:\n            - JWT_SECRET_FILE=/run/secrets/jwt_secret\n        secrets:\n            - other\n            - jwt_secret\nsecrets:\n    other:\n        file: ./o\n    jwt_secret:\n        file: ./secrets/develop/jwt_secret\n    postgres_password:\n        file: ./secrets/develop/postgres_password\n"
        );
        // No top-level secrets yet: the file's own step (4) is used.
        let text = "services:\n    db:\n        environment:\n            POSTGRES_PASSWORD: x\n";
        let e = edit("c.yml", text, &["postgres_password".into()], &file_def).unwrap();
        assert_eq!(
            e.text,
            "services:\n    db:\n        environment:\n            POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password\n        secrets:\n            - postgres_password\n\nsecrets:\n    postgres_password:\n        file: ./secrets/develop/postgres_password\n"
        );
    }

    #[test]
    fn anchors_an_alias_reuses_are_refused_naming_the_anchor() {
        let secrets = ["postgres_password".to_string()];
        // An alias for the whole environment.
        let text = "x-env: &backend-env\n  POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}\n  PORT: 1\nservices:\n  api:\n    environment: *backend-env\n  worker:\n    environment:\n      <<: *backend-env\n      EXTRA: 1\n";
        let e = edit("c.yml", text, &secrets, &file_def).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with("c.yml:2: POSTGRES_PASSWORD is set inside the anchor &backend-env (c.yml:1), which c.yml:6, c.yml:9 reuse through *backend-env"),
            "{msg}"
        );
        // A merge key on the service, from an anchored service.
        let text = "services:\n  api: &api\n    image: api\n    environment:\n      - POSTGRES_PASSWORD=${POSTGRES_PASSWORD}\n  api2:\n    <<: *api\n";
        let msg = format!(
            "{:#}",
            edit("c.yml", text, &secrets, &file_def).unwrap_err()
        );
        assert!(msg.starts_with("c.yml:5: POSTGRES_PASSWORD is set inside the anchor &api (c.yml:2), which c.yml:7 reuses through *api"), "{msg}");
        // An anchor nobody reuses, or one without a secret, is edited as usual.
        let text = "x-common: &common\n  restart: always\nservices:\n  api:\n    <<: *common\n    environment: &own\n      POSTGRES_PASSWORD: x\n";
        let e = edit("c.yml", text, &secrets, &file_def).unwrap();
        assert!(
            e.text
                .contains("      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password\n"),
            "{}",
            e.text
        );
        // `&` and `*` inside values are not anchors.
        let text = "services:\n  api:\n    command: a&b *c\n    environment:\n      POSTGRES_PASSWORD: x\n";
        assert!(edit("c.yml", text, &secrets, &file_def).is_ok());
    }
}
