//! Line parsers for `allowed_signers` (git's `gpg.ssh.allowedSignersFile`, `man ssh-keygen`
//! section ALLOWED SIGNERS) and for the revoked-keys file.
//!
//! The parsers are pure: each takes one line and returns the parsed entry, `None` for a blank
//! or comment line, or the reason the line is wrong. The caller adds the file and line number.

use ssh_key::PublicKey;

use super::timestamp;

/// One `allowed_signers` line: `principals [options] ssh-ed25519 AAAA... [comment]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The principals field as written (without surrounding quotes), e.g. `ops@x,alice@x`.
    /// Wildcards are kept as they are; outpost shows the field, it does not match on it.
    pub(crate) principals: String,
    /// The raw ed25519 public key.
    pub(crate) key: [u8; 32],
    /// `namespaces="..."`: patterns of namespaces this key may sign; `None` means any.
    pub(crate) namespaces: Option<Vec<String>>,
    /// `valid-after=`, in Unix seconds.
    pub(crate) valid_after: Option<u64>,
    /// `valid-before=`, in Unix seconds.
    pub(crate) valid_before: Option<u64>,
}

const SUPPORTED_OPTIONS: &str = "supported options are namespaces, valid-after and valid-before";

/// Parses one `allowed_signers` line.
pub(crate) fn parse_entry(line: &str) -> Result<Option<Entry>, String> {
    let mut rest = line.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let principals = unquote(next_token(&mut rest)?);
    if principals.is_empty() {
        return Err("empty principals field".to_owned());
    }
    let mut entry = Entry {
        principals,
        key: [0; 32],
        namespaces: None,
        valid_after: None,
        valid_before: None,
    };
    let mut key_type = next_token(&mut rest)?;
    if !key_type.is_empty() && !looks_like_key_type(key_type) {
        parse_options(key_type, &mut entry)?;
        key_type = next_token(&mut rest)?;
    }
    entry.key = parse_key(key_type, next_token(&mut rest)?)?;
    Ok(Some(entry))
}

/// Parses one revoked-keys line: `ssh-ed25519 AAAA... [comment]`.
pub(crate) fn parse_revoked(line: &str) -> Result<Option<[u8; 32]>, String> {
    let mut rest = line.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let key_type = next_token(&mut rest)?;
    parse_key(key_type, next_token(&mut rest)?).map(Some)
}

/// Does `namespace` match the `namespaces=` pattern list? Like OpenSSH's `match_pattern_list`:
/// `*` and `?` are wildcards, a pattern starting with `!` denies, and a deny wins.
pub(crate) fn namespace_allowed(patterns: &[String], namespace: &str) -> bool {
    let mut allowed = false;
    for pattern in patterns {
        if let Some(denied) = pattern.strip_prefix('!') {
            if glob_match(denied.as_bytes(), namespace.as_bytes()) {
                return false;
            }
        } else if glob_match(pattern.as_bytes(), namespace.as_bytes()) {
            allowed = true;
        }
    }
    allowed
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((&p, rest)) => match text.split_first() {
            Some((&t, text_rest)) => (p == b'?' || p == t) && glob_match(rest, text_rest),
            None => false,
        },
    }
}

/// Takes the next whitespace-delimited token off `rest`; double quotes protect whitespace.
/// Returns `""` at the end of the line.
fn next_token<'a>(rest: &mut &'a str) -> Result<&'a str, String> {
    let text = rest.trim_start();
    let mut quoted = false;
    let mut end = text.len();
    for (index, ch) in text.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                end = index;
                break;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated quote; close the double quote".to_owned());
    }
    let (token, after) = text.split_at(end);
    *rest = after;
    Ok(token)
}

fn unquote(token: &str) -> String {
    token.replace('"', "")
}

/// The tokens OpenSSH uses as key types; anything else after the principals is options.
fn looks_like_key_type(token: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-", "rsa-", "webauthn-"]
        .iter()
        .any(|prefix| token.starts_with(prefix))
        && !token.contains(['=', '"', ','])
}

fn parse_key(key_type: &str, base64: &str) -> Result<[u8; 32], String> {
    if key_type.is_empty() {
        return Err(
            "missing public key; expected ssh-ed25519 AAAA... as in a .pub file".to_owned(),
        );
    }
    if key_type != "ssh-ed25519" {
        return Err(format!(
            "unsupported key type \"{key_type}\"; only ssh-ed25519 keys are supported"
        ));
    }
    if base64.is_empty() {
        return Err("missing base64 key data after ssh-ed25519".to_owned());
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {base64}")).map_err(|e| {
        format!("invalid ssh-ed25519 public key ({e}); copy the key from the signer's .pub file")
    })?;
    let ed25519 = key
        .key_data()
        .ed25519()
        .ok_or_else(|| "key data is not an ssh-ed25519 key".to_owned())?;
    Ok(ed25519.0)
}

fn parse_options(field: &str, entry: &mut Entry) -> Result<(), String> {
    for option in split_unquoted(field, ',') {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(unquote(value))),
            None => (option, None),
        };
        let lower = name.to_ascii_lowercase();
        match (lower.as_str(), value) {
            ("cert-authority", _) => {
                return Err("cert-authority is not supported: outpost does not accept \
                            certificates; list the signer's plain ssh-ed25519 key instead"
                    .to_owned());
            }
            ("namespaces", Some(value)) => set_namespaces(entry, &value)?,
            ("valid-after", Some(value)) => set_time(&mut entry.valid_after, &lower, &value)?,
            ("valid-before", Some(value)) => set_time(&mut entry.valid_before, &lower, &value)?,
            ("namespaces" | "valid-after" | "valid-before", None) => {
                return Err(format!(
                    "option {lower} needs a value, e.g. {lower}=\"...\""
                ));
            }
            _ => return Err(format!("unknown option \"{name}\"; {SUPPORTED_OPTIONS}")),
        }
    }
    Ok(())
}

fn set_namespaces(entry: &mut Entry, value: &str) -> Result<(), String> {
    if entry.namespaces.is_some() {
        return Err("namespaces given twice; list all namespaces in one option".to_owned());
    }
    let list: Vec<String> = value.split(',').map(str::trim).map(str::to_owned).collect();
    if list.iter().any(String::is_empty) {
        return Err(
            "empty namespace in namespaces=; remove the option to allow every \
                    namespace"
                .to_owned(),
        );
    }
    entry.namespaces = Some(list);
    Ok(())
}

fn set_time(slot: &mut Option<u64>, name: &str, value: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} given twice"));
    }
    let seconds = timestamp::parse(value).map_err(|why| {
        format!(
            "invalid {name} \"{value}\": {why}; use YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, \
             optionally ending in Z"
        )
    })?;
    *slot = Some(seconds);
    Ok(())
}

/// Splits `text` at `separator`s outside double quotes.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (index, ch) in text.char_indices() {
        if ch == '"' {
            quoted = !quoted;
        } else if ch == separator && !quoted {
            parts.push(&text[start..index]);
            start = index + ch.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3jqGmSRoREF2AVV3UJnDh7vaL98yJz7afFu39mzIOe";
    const KEY_BYTES: &str = "4de3a869924684441760155775099c387bbda2fdf32273eda7c5bb7f66cc839e";

    fn entry(line: &str) -> Result<Entry, String> {
        parse_entry(line)?.ok_or_else(|| format!("{line:?} parsed as a comment"))
    }

    #[test]
    fn plain_line_with_comment() -> Result<(), Box<dyn std::error::Error>> {
        let parsed = entry(&format!("alice@example.com {KEY} alice's laptop"))?;
        assert_eq!(parsed.principals, "alice@example.com");
        assert_eq!(hex::encode(parsed.key), KEY_BYTES);
        assert_eq!(parsed.namespaces, None);
        assert_eq!((parsed.valid_after, parsed.valid_before), (None, None));
        Ok(())
    }

    #[test]
    fn comments_blank_lines_and_leading_whitespace() -> Result<(), String> {
        assert_eq!(parse_entry("")?, None);
        assert_eq!(parse_entry("   \t")?, None);
        assert_eq!(parse_entry("# alice@example.com ssh-ed25519 AAAA")?, None);
        assert_eq!(parse_entry("   # indented comment")?, None);
        assert_eq!(
            entry(&format!("  \tops@x,alice@x {KEY}"))?.principals,
            "ops@x,alice@x"
        );
        Ok(())
    }

    #[test]
    fn quoted_principals_and_wildcards() -> Result<(), String> {
        assert_eq!(
            entry(&format!("\"ops@x,alice@x\" {KEY}"))?.principals,
            "ops@x,alice@x"
        );
        assert_eq!(
            entry(&format!("*@example.com {KEY}"))?.principals,
            "*@example.com"
        );
        Ok(())
    }

    #[test]
    fn options_with_quotes_commas_and_case() -> Result<(), String> {
        let parsed = entry(&format!(
            "alice@x NAMESPACES=\"git,outpost-bundle\",Valid-After=\"20260101\",\
             valid-before=20270101120000Z {KEY}"
        ))?;
        let namespaces = vec!["git".to_owned(), "outpost-bundle".to_owned()];
        assert_eq!(parsed.namespaces, Some(namespaces));
        assert_eq!(parsed.valid_after, Some(1_767_225_600));
        assert_eq!(parsed.valid_before, Some(1_798_804_800));
        assert_eq!(hex::encode(parsed.key), KEY_BYTES);
        Ok(())
    }

    #[test]
    fn quoted_option_value_may_hold_spaces() -> Result<(), String> {
        let parsed = entry(&format!("alice@x namespaces=\"git, outpost-*\" {KEY}"))?;
        let namespaces = vec!["git".to_owned(), "outpost-*".to_owned()];
        assert_eq!(parsed.namespaces, Some(namespaces));
        Ok(())
    }

    #[test]
    fn cert_authority_is_refused_with_a_remedy() {
        let error = parse_entry(&format!("*@x cert-authority {KEY}"));
        let Err(reason) = error else {
            panic!("accepted: {error:?}")
        };
        assert!(
            reason.contains("cert-authority is not supported"),
            "{reason}"
        );
        assert!(reason.contains("plain ssh-ed25519 key"), "{reason}");
    }

    #[test]
    fn other_key_types_are_refused() {
        for key_type in [
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            "sk-ssh-ed25519@openssh.com",
        ] {
            let line = format!("alice@x {key_type} AAAAB3NzaC1yc2EAAAADAQABAAAAgQDk8J55sOBuVBNQ");
            assert_eq!(
                parse_entry(&line),
                Err(format!(
                    "unsupported key type \"{key_type}\"; only ssh-ed25519 keys are supported"
                ))
            );
        }
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let cases = [
            ("alice@x".to_owned(), "missing public key"),
            (
                "alice@x namespaces=\"git\"".to_owned(),
                "missing public key",
            ),
            ("alice@x ssh-ed25519".to_owned(), "missing base64 key data"),
            (
                "alice@x ssh-ed25519 AAAA!!notbase64".to_owned(),
                "invalid ssh-ed25519 public key",
            ),
            (format!("alice@x foo=bar {KEY}"), "unknown option \"foo\""),
            (
                format!("alice@x namespaces=\"git {KEY}"),
                "unterminated quote",
            ),
            (
                format!("alice@x namespaces {KEY}"),
                "option namespaces needs a value",
            ),
            (format!("alice@x namespaces=\"\" {KEY}"), "empty namespace"),
            (
                format!("alice@x valid-after=2026 {KEY}"),
                "invalid valid-after \"2026\"",
            ),
            (
                format!("alice@x valid-before=20261301 {KEY}"),
                "no such date",
            ),
            (
                format!("alice@x namespaces=git,namespaces=git {KEY}"),
                "given twice",
            ),
            (
                format!(
                    "alice@x ssh-ed25519 {}",
                    "AAAAB3NzaC1yc2EAAAADAQABAAAAgQDk8J55sOBuVBNQ"
                ),
                "invalid ssh-ed25519 public key",
            ),
        ];
        for (line, expected) in cases {
            match parse_entry(&line) {
                Err(reason) => assert!(reason.contains(expected), "{line}: {reason}"),
                Ok(parsed) => panic!("{line} accepted: {parsed:?}"),
            }
        }
    }

    #[test]
    fn revoked_lines() -> Result<(), String> {
        assert_eq!(parse_revoked("# comment")?, None);
        assert_eq!(parse_revoked("")?, None);
        let key = parse_revoked(&format!("  {KEY} old laptop"))?.ok_or("no key")?;
        assert_eq!(hex::encode(key), KEY_BYTES);
        let rsa = parse_revoked("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDk8J55sOBuVBNQ");
        assert!(rsa.is_err_and(|reason| reason.contains("only ssh-ed25519")));
        Ok(())
    }

    #[test]
    fn namespace_patterns_follow_openssh() {
        let patterns = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert!(namespace_allowed(
            &patterns(&["git", "outpost-bundle"]),
            "outpost-bundle"
        ));
        assert!(!namespace_allowed(&patterns(&["git"]), "outpost-bundle"));
        assert!(namespace_allowed(
            &patterns(&["outpost-*"]),
            "outpost-bundle"
        ));
        assert!(namespace_allowed(&patterns(&["g?t"]), "git"));
        assert!(!namespace_allowed(&patterns(&["*", "!git"]), "git"));
        assert!(namespace_allowed(
            &patterns(&["*", "!git"]),
            "outpost-bundle"
        ));
        assert!(!namespace_allowed(&patterns(&["!git"]), "outpost-bundle"));
    }
}
