//! `${VAR}` and `${VAR:-default}` in the config text, substituted from the environment
//! before parsing. `$$` is a literal `$`. An unset variable without a default is an error
//! naming it and its line.

use super::ConfigError;

/// Substitutes variables in `text`, keeping line breaks where they were.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(inner) = after.strip_prefix('{') {
                let Some(end) = inner.find('}') else {
                    return Err(ConfigError::at(
                        i + 1,
                        "",
                        "unterminated ${ in variable reference",
                    ));
                };
                let spec = &inner[..end];
                let (name, default) = match spec.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (spec, None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(ConfigError::at(
                        i + 1,
                        "",
                        format!("invalid variable name {name:?} in ${{{spec}}}"),
                    ));
                }
                match lookup(name).or_else(|| default.map(str::to_string)) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(ConfigError::at(
                            i + 1,
                            "",
                            format!("environment variable {name} is not set and has no default (write ${{{name}:-default}})"),
                        ))
                    }
                }
                rest = &inner[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_defaults_and_escapes() {
        let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_string());
        let out = substitute(
            "a = \"${TOKEN}\"\nb = \"${PORT:-8080}\"\nc = \"$$HOME $x\"\n",
            env,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, "a = \"s3cret\"\nb = \"8080\"\nc = \"$HOME $x\"\n");
    }

    #[test]
    fn an_unset_variable_without_default_names_it_and_its_line() {
        let err = substitute("x = 1\ny = \"${MISSING}\"\n", |_| None)
            .err()
            .unwrap_or_else(|| panic!("no error"));
        let msg = err.to_string();
        assert!(msg.contains("MISSING") && msg.contains("line 2"), "{msg}");
    }
}
