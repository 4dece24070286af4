//! Allowlists of hosts the service may send requests to, read from variables such as
//! MUSCLE_CALLBACK_HOSTS and MUSCLE_ENDPOINT_HOSTS: `host`, `host:port`, `1.2.3.4[:port]` or
//! `[v6 address][:port]`, parsed once at start by the same parser that reads the URLs.

use url::{Host, Url};

/// One entry of an allowlist of hosts (MUSCLE_CALLBACK_HOSTS, MUSCLE_ENDPOINT_HOSTS): a host
/// and the port allowed on it (none written: the URL scheme's default port, 80 for http and 443
/// for https).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    host: Host<String>,
    port: Option<u16>,
}

impl std::str::FromStr for AllowedHost {
    type Err = String;

    /// `host`, `host:port`, `1.2.3.4[:port]` or `[v6 address][:port]`.
    fn from_str(entry: &str) -> Result<Self, String> {
        // Read by the same parser that reads the URLs it admits, so both compare alike.
        let parse = |scheme: &str| Url::parse(&format!("{scheme}://{entry}"));
        let url = parse("http").map_err(|e| e.to_string())?;
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err("must be a host or host:port, nothing more".into());
        }
        let host = url.host().ok_or("names no host")?;
        // The parser drops a scheme's default port: a port kept under http or https was written.
        let port = url
            .port()
            .or_else(|| parse("https").ok().and_then(|u| u.port()));
        Ok(Self {
            host: without_trailing_dot(host),
            port,
        })
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

impl AllowedHost {
    pub fn admits(&self, url: &Url) -> bool {
        let default = match url.scheme() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        url.host().map(without_trailing_dot).as_ref() == Some(&self.host)
            && url.port_or_known_default() == Some(self.port.unwrap_or(default))
    }
}

/// `example.com.` and `example.com` name the same host.
fn without_trailing_dot(host: Host<&str>) -> Host<String> {
    match host {
        Host::Domain(name) => Host::Domain(name.strip_suffix('.').unwrap_or(name).to_string()),
        Host::Ipv4(address) => Host::Ipv4(address),
        Host::Ipv6(address) => Host::Ipv6(address),
    }
}

/// The entries of `variable` (blank ones skipped); an entry that is not a host or host:port is
/// refused with a message naming the variable.
pub fn parse_hosts(variable: &str, entries: &[String]) -> Result<Vec<AllowedHost>, String> {
    entries
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse()
                .map_err(|e| format!("{variable}: {entry:?} {e}"))
        })
        .collect()
}
