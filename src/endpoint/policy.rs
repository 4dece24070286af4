//! Which servers endpoint sides may reach (MUSCLE_ENDPOINT_HOSTS; none by default) and the keys
//! they may use (MUSCLE_ENDPOINT_KEY* variables), both read once at start.

use std::collections::BTreeMap;

use url::Url;

use crate::allowlist::{AllowedHost, parse_hosts};
use crate::spec::{ENDPOINT_KEY_PREFIX, EndpointSpec};
use crate::validation::FieldError;

#[derive(Clone, Default)]
pub struct EndpointPolicy {
    hosts: Vec<AllowedHost>,
    keys: BTreeMap<String, String>,
}

// By hand: the keys' values never reach a log.
impl std::fmt::Debug for EndpointPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPolicy")
            .field("hosts", &self.hosts)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EndpointPolicy {
    /// The MUSCLE_ENDPOINT_HOSTS entries `hosts`, with the keys given as (variable, value);
    /// variables without the MUSCLE_ENDPOINT_KEY prefix and empty values are dropped.
    pub fn new(
        hosts: &[String],
        keys: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, String> {
        Ok(Self {
            hosts: parse_hosts("MUSCLE_ENDPOINT_HOSTS", hosts)?,
            keys: keys
                .into_iter()
                .filter(|(name, value)| name.starts_with(ENDPOINT_KEY_PREFIX) && !value.is_empty())
                .collect(),
        })
    }

    /// `hosts`, with the MUSCLE_ENDPOINT_KEY* variables of this process's environment.
    pub fn from_env(hosts: &[String]) -> Result<Self, String> {
        Self::new(hosts, std::env::vars())
    }

    pub fn hosts(&self) -> &[AllowedHost] {
        &self.hosts
    }

    /// The side's URL and key when this process may use them; else every field at fault,
    /// under `field` (`old` or `new`).
    pub fn admit(
        &self,
        spec: &EndpointSpec,
        field: &str,
    ) -> Result<(Url, Option<String>), Vec<FieldError>> {
        let mut errors = Vec::new();
        let url = match spec.parsed_url() {
            Ok(url) if self.hosts.iter().any(|allowed| allowed.admits(&url)) => Some(url),
            Ok(url) => {
                let host = url.host_str().unwrap_or_default();
                let port = url.port_or_known_default().unwrap_or(0);
                let why = if self.hosts.is_empty() {
                    "endpoint sides are off here: MUSCLE_ENDPOINT_HOSTS lists no host".to_string()
                } else {
                    format!("host {host} (port {port}) is not in MUSCLE_ENDPOINT_HOSTS")
                };
                errors.push(FieldError::field(format!("{field}.endpoint.url"), why));
                None
            }
            Err(why) => {
                errors.push(FieldError::field(format!("{field}.endpoint.url"), why));
                None
            }
        };
        let key = match &spec.api_key_env {
            None => None,
            Some(name) => match self.keys.get(name) {
                Some(key) => Some(key.clone()),
                None => {
                    errors.push(FieldError::field(
                        format!("{field}.endpoint.api_key_env"),
                        format!("{name} is not set where this job runs"),
                    ));
                    None
                }
            },
        };
        match url {
            Some(url) if errors.is_empty() => Ok((url, key)),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::EndpointApi;

    fn spec(url: &str, key: Option<&str>) -> EndpointSpec {
        EndpointSpec {
            url: url.into(),
            model: "m".into(),
            tokenizer: "t".into(),
            api_key_env: key.map(str::to_string),
            max_in_flight: 4,
            api: EndpointApi::Completions,
            prompts_per_request: 1,
            timeout_seconds: 10,
            max_retries: 1,
            prompt_format: Default::default(),
            extra_body: Default::default(),
        }
    }

    #[test]
    fn hosts_ports_and_keys_are_checked_and_keys_never_shown() {
        let policy = EndpointPolicy::new(
            &["vllm-a:8000".into(), "[::1]:9000".into()],
            [
                ("MUSCLE_ENDPOINT_KEY_A".to_string(), "sk-secret".to_string()),
                ("OTHER_KEY".to_string(), "nope".to_string()),
            ],
        )
        .unwrap();
        let (url, key) = policy
            .admit(
                &spec("http://vllm-a:8000/v1", Some("MUSCLE_ENDPOINT_KEY_A")),
                "new",
            )
            .unwrap();
        assert_eq!(url.as_str(), "http://vllm-a:8000/v1");
        assert_eq!(key.as_deref(), Some("sk-secret"));
        assert!(
            policy
                .admit(&spec("http://[::1]:9000/v1", None), "old")
                .is_ok()
        );
        let refused = policy
            .admit(&spec("http://vllm-a:8001/v1", Some("OTHER_KEY")), "new")
            .unwrap_err();
        let fields: Vec<&str> = refused.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["new.endpoint.url", "new.endpoint.api_key_env"]);
        assert!(refused[0].message.contains("vllm-a (port 8001)"));
        // An IPv6 literal with the port inside the brackets is another host, not ::1.
        assert!(
            policy
                .admit(&spec("http://[::1:9000]/v1", None), "old")
                .is_err()
        );
        assert!(!format!("{policy:?}").contains("sk-secret"));
        let none = EndpointPolicy::new(&[], []).unwrap();
        let refused = none
            .admit(&spec("http://vllm-a:8000/v1", None), "old")
            .unwrap_err();
        assert!(refused[0].message.contains("lists no host"), "{refused:?}");
        assert!(EndpointPolicy::new(&["http://x/path".into()], []).is_err());
    }
}
