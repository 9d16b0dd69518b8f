//! `${VAR}` interpolation of pipeline-file strings, in one place:
//! `${VAR}` (required), `${VAR:-default}`, `${VAR:?message}`, and `$$` for a
//! literal `$`. Lookups go through a function so tests and `demo` can supply
//! variables without touching the process environment.

/// Replaces every `${...}` in `input`. `key` names the config key for errors.
pub fn interpolate(
    input: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = body_start
                .find('}')
                .ok_or_else(|| format!("{key}: unterminated ${{ in value"))?;
            let body = &body_start[..end];
            out.push_str(&resolve(body, key, lookup)?);
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(
    body: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let (name, op, arg) = match body.find(":-").or_else(|| body.find(":?")) {
        Some(i) => (&body[..i], &body[i..i + 2], Some(&body[i + 2..])),
        None => (body, "", None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{key}: invalid variable name `{name}` in ${{{body}}}"
        ));
    }
    let value = lookup(name).filter(|v| !v.is_empty());
    match (value, op, arg) {
        (Some(v), _, _) => Ok(v),
        (None, ":-", Some(default)) => Ok(default.to_string()),
        (None, ":?", Some(msg)) => Err(format!(
            "{key}: environment variable {name} is not set: {msg}"
        )),
        _ => Err(format!("{key}: environment variable {name} is not set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_defaults_and_escapes() {
        assert_eq!(
            interpolate("a ${TOKEN} b", "k", &env).unwrap(),
            "a s3cr3t b"
        );
        assert_eq!(interpolate("${NOPE:-x}", "k", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-d}", "k", &env).unwrap(), "d");
        assert_eq!(interpolate("cost $$5 $x", "k", &env).unwrap(), "cost $5 $x");
    }

    #[test]
    fn missing_variable_names_it_and_the_key() {
        let e = interpolate("${MISSING_VAR}", "sources.socialintents.api_token", &env).unwrap_err();
        assert!(
            e.contains("MISSING_VAR") && e.contains("sources.socialintents.api_token"),
            "{e}"
        );
        let e = interpolate("${MISSING_VAR:?set it in .env}", "k", &env).unwrap_err();
        assert!(e.contains("set it in .env"), "{e}");
        assert!(interpolate("${OPEN", "k", &env).is_err());
    }
}
