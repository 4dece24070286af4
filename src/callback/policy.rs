use std::collections::BTreeMap;

use url::Url;

pub use crate::allowlist::AllowedHost;
use crate::allowlist::parse_hosts;

/// Callback secrets must live in variables with this prefix.
pub const SECRET_PREFIX: &str = "MUSCLE_CALLBACK_SECRET";

/// Which hosts callbacks may go to (MUSCLE_CALLBACK_HOSTS; none by default), and the signing
/// secrets the server was started with.
#[derive(Clone, Default)]
pub struct CallbackPolicy {
    hosts: Vec<AllowedHost>,
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
    /// The MUSCLE_CALLBACK_HOSTS entries `hosts` (blank ones skipped), with the secrets given as
    /// (variable name, value); an entry that is not a host or host:port is refused.
    pub fn new(
        hosts: &[String],
        secrets: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Self, String> {
        let hosts = parse_hosts("MUSCLE_CALLBACK_HOSTS", hosts)?;
        Ok(Self {
            hosts,
            secrets: secrets
                .into_iter()
                .filter(|(name, value)| name.starts_with(SECRET_PREFIX) && !value.is_empty())
                .collect(),
        })
    }

    /// `hosts`, with the MUSCLE_CALLBACK_SECRET* variables of this process's environment.
    pub fn from_env(hosts: &[String]) -> Result<Self, String> {
        Self::new(
            hosts,
            std::env::vars_os().filter_map(|(name, value)| {
                Some((name.into_string().ok()?, value.into_encoded_bytes()))
            }),
        )
    }

    pub fn hosts(&self) -> &[AllowedHost] {
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
        let host = url.host().ok_or("names no host")?.to_owned();
        if self.hosts.is_empty() {
            return Err(
                "callbacks are off on this server: MUSCLE_CALLBACK_HOSTS lists no host".into(),
            );
        }
        if !self.hosts.iter().any(|allowed| allowed.admits(&url)) {
            let port = url.port_or_known_default().unwrap_or(0);
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
        .unwrap()
    }

    fn allowing(entries: &[&str]) -> CallbackPolicy {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        CallbackPolicy::new(&entries, []).unwrap()
    }

    #[test]
    fn hosts_are_matched_by_name_and_port() {
        let policy = policy();
        assert!(policy.check_url("https://ci.example.com/hook").is_ok());
        assert!(policy.check_url("http://ci.example.com/hook").is_ok());
        assert!(policy.check_url("https://ci.example.com:443/hook").is_ok());
        // No port in the entry: the scheme's default port, not any port.
        let refused = policy
            .check_url("http://ci.example.com:9000/x")
            .unwrap_err();
        assert!(refused.contains("ci.example.com (port 9000)"), "{refused}");
        assert!(policy.check_url("https://hooks.local:8443/").is_ok());
        assert!(policy.check_url("http://hooks.local:8443/").is_ok());
        let refused = policy.check_url("https://hooks.local/").unwrap_err();
        assert!(refused.contains("hooks.local (port 443)"), "{refused}");
        assert!(policy.check_url("https://hooks.local:8444/").is_err());
        assert!(policy.check_url("https://evil.example.com/").is_err());
        assert!(
            policy
                .check_url("https://ci.example.com.evil.net/")
                .is_err()
        );
        assert!(policy.check_url("https://example.com/").is_err());
    }

    #[test]
    fn an_entry_with_a_default_port_is_that_port_only() {
        let policy = allowing(&["a.test:80", "b.test:443"]);
        assert!(policy.check_url("http://a.test/").is_ok());
        assert!(policy.check_url("https://a.test:80/").is_ok());
        assert!(policy.check_url("https://a.test/").is_err());
        assert!(policy.check_url("https://b.test/").is_ok());
        assert!(policy.check_url("http://b.test:443/").is_ok());
        assert!(policy.check_url("http://b.test/").is_err());
    }

    #[test]
    fn bracketed_ipv6_entries_keep_their_port() {
        let policy = allowing(&["[fd00::1]:443", "[::1]:8080"]);
        assert!(policy.check_url("https://[fd00::1]/").is_ok());
        assert!(policy.check_url("http://[fd00::1]:443/").is_ok());
        assert!(policy.check_url("https://[fd00:0::1]:443/").is_ok());
        assert!(policy.check_url("http://[::1]:8080/hook").is_ok());
        // The hostile pair of the review: another host, any port.
        for url in [
            "http://[fd00::1:443]:9999/",
            "http://[fd00::1:443]/",
            "https://[fd00::1]:80/",
            "http://[::1:8080]:22/",
            "http://[::1]:22/",
        ] {
            assert!(policy.check_url(url).is_err(), "{url} was admitted");
        }
        let any_port = allowing(&["[fd00::1]"]);
        assert!(any_port.check_url("https://[fd00::1]/").is_ok());
        assert!(any_port.check_url("http://[fd00::1]:8080/").is_err());
    }

    #[test]
    fn ipv4_names_case_and_trailing_dots() {
        let policy = allowing(&["127.0.0.1:9000", "Hooks.Example.ORG.", "10.0.0.7"]);
        assert!(policy.check_url("http://127.0.0.1:9000/").is_ok());
        assert!(
            policy.check_url("http://127.1:9000/").is_ok(),
            "the same address"
        );
        assert!(policy.check_url("http://127.0.0.1:9001/").is_err());
        assert!(policy.check_url("http://127.0.0.2:9000/").is_err());
        assert!(policy.check_url("https://hooks.example.org/").is_ok());
        assert!(policy.check_url("https://HOOKS.example.org./").is_ok());
        assert!(policy.check_url("https://hooks.example.org:8443/").is_err());
        assert!(policy.check_url("http://10.0.0.7/").is_ok());
        assert!(policy.check_url("http://10.0.0.7:8080/").is_err());
        assert_eq!(
            policy
                .hosts()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["127.0.0.1:9000", "hooks.example.org", "10.0.0.7"]
        );
    }

    #[test]
    fn bad_entries_are_refused_naming_the_variable() {
        for entry in [
            "fd00::1",
            "[fd00::1",
            "[fd00::1]x",
            "host:port",
            "host:99999",
            "https://host",
            "host/path",
            "user@host",
            "host?x",
            ":8080",
        ] {
            let error = CallbackPolicy::new(&[entry.to_string()], []).unwrap_err();
            assert!(
                error.contains("MUSCLE_CALLBACK_HOSTS") && error.contains(entry),
                "{entry}: {error}"
            );
        }
        assert!(
            CallbackPolicy::new(&[" ".into(), String::new()], [])
                .unwrap()
                .hosts()
                .is_empty()
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
                .unwrap()
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
