use std::collections::BTreeMap;

use reqwest::Url;

/// Callback secrets must live in variables with this prefix.
pub const SECRET_PREFIX: &str = "MUSCLE_CALLBACK_SECRET";

/// Which hosts callbacks may go to (MUSCLE_CALLBACK_HOSTS; none by default), and the signing
/// secrets the server was started with.
#[derive(Clone, Default)]
pub struct CallbackPolicy {
    /// Lower-case `host` (any port) or `host:port` entries.
    hosts: Vec<String>,
    secrets: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for CallbackPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackPolicy")
            .field("hosts", &self.hosts)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CallbackPolicy {
    /// `hosts`, with the secrets given as (variable name, value).
    pub fn new(hosts: &[String], secrets: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        Self {
            hosts: hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            secrets: secrets
                .into_iter()
                .filter(|(name, value)| name.starts_with(SECRET_PREFIX) && !value.is_empty())
                .collect(),
        }
    }

    /// `hosts`, with the MUSCLE_CALLBACK_SECRET* variables of this process's environment.
    pub fn from_env(hosts: &[String]) -> Self {
        Self::new(
            hosts,
            std::env::vars_os().filter_map(|(name, value)| {
                Some((name.into_string().ok()?, value.into_encoded_bytes()))
            }),
        )
    }

    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The URL, parsed, when a callback may be sent to it.
    pub fn check_url(&self, text: &str) -> Result<Url, String> {
        let url = Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("must be http or https, not {}", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; the signature authenticates the call".into());
        }
        let host = url
            .host_str()
            .ok_or("names no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if self.hosts.is_empty() {
            return Err(
                "callbacks are off on this server: MUSCLE_CALLBACK_HOSTS lists no host".into(),
            );
        }
        let port = url.port_or_known_default().unwrap_or(0);
        let allowed = self.hosts.iter().any(|entry| {
            entry.trim_start_matches('[').replace(']', "") == host
                || *entry == format!("{host}:{port}")
                || *entry == format!("[{host}]:{port}")
        });
        if !allowed {
            return Err(format!(
                "host {host} (port {port}) is not in the server's MUSCLE_CALLBACK_HOSTS"
            ));
        }
        Ok(url)
    }

    /// The secret, when `name` is an allowed variable set to a non-empty value on this host.
    pub fn check_secret_env(&self, name: &str) -> Result<Vec<u8>, String> {
        if !name.starts_with(SECRET_PREFIX)
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "must be an environment variable name beginning {SECRET_PREFIX} \
                 (upper-case letters, digits and _), e.g. {SECRET_PREFIX}_CI"
            ));
        }
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| format!("{name} was not set (or was empty) when the server started"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CallbackPolicy {
        CallbackPolicy::new(
            &["CI.example.com".into(), "hooks.local:8443".into()],
            [
                ("MUSCLE_CALLBACK_SECRET_CI".into(), b"s3cret".to_vec()),
                ("MUSCLE_CALLBACK_SECRET_EMPTY".into(), Vec::new()),
                ("DATABASE_URL".into(), b"postgres://u:p@h/d".to_vec()),
            ],
        )
    }

    #[test]
    fn hosts_are_matched_by_name_or_name_and_port() {
        let policy = policy();
        assert!(policy.check_url("https://ci.example.com/hook").is_ok());
        assert!(policy.check_url("http://ci.example.com:9000/x").is_ok());
        assert!(policy.check_url("https://hooks.local:8443/").is_ok());
        let refused = policy.check_url("https://hooks.local/").unwrap_err();
        assert!(refused.contains("hooks.local (port 443)"), "{refused}");
        assert!(policy.check_url("https://evil.example.com/").is_err());
        assert!(
            policy
                .check_url("https://ci.example.com.evil.net/")
                .is_err()
        );
    }

    #[test]
    fn other_schemes_credentials_and_an_empty_list_are_refused() {
        let policy = policy();
        assert!(
            policy
                .check_url("file:///etc/passwd")
                .unwrap_err()
                .contains("http or https")
        );
        assert!(
            policy
                .check_url("https://u:p@ci.example.com/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(policy.check_url("not a url").unwrap_err().contains("URL"));
        assert!(
            CallbackPolicy::new(&[], [])
                .check_url("https://ci.example.com/")
                .unwrap_err()
                .contains("MUSCLE_CALLBACK_HOSTS")
        );
    }

    #[test]
    fn secrets_come_from_prefixed_variables_only() {
        let policy = policy();
        assert!(
            policy
                .check_secret_env("DATABASE_URL")
                .unwrap_err()
                .contains(SECRET_PREFIX)
        );
        assert!(
            policy
                .check_secret_env("MUSCLE_CALLBACK_SECRET_NEVER_SET")
                .unwrap_err()
                .contains("not set")
        );
        assert!(
            policy
                .check_secret_env("MUSCLE_CALLBACK_SECRET_EMPTY")
                .is_err()
        );
        assert!(
            policy
                .check_secret_env("muscle_callback_secret_ci")
                .is_err()
        );
        assert_eq!(
            policy
                .check_secret_env("MUSCLE_CALLBACK_SECRET_CI")
                .unwrap(),
            b"s3cret"
        );
        assert!(!format!("{policy:?}").contains("s3cret"));
    }
}
