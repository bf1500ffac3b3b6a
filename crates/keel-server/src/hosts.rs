//! The Host allow-list, against DNS rebinding: a web page whose name an attacker re-points at
//! 127.0.0.1 can make the browser send requests to a server on loopback, but the browser still
//! sends the attacker's name in `Host`. A request whose `Host` names neither a loopback name
//! (`localhost`, `127.0.0.1`, `::1`) nor an allowed host is refused with 403 before any handler
//! runs. Ports are ignored; `*` allows any host. A request without `Host` (an in-process caller;
//! HTTP/1.0) is let through: a browser always sends one.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The host names requests may be addressed to.
#[derive(Clone, Debug)]
pub(crate) struct AllowedHosts {
    any: bool,
    names: Vec<String>,
}

impl AllowedHosts {
    /// Loopback names and `extra` (`name`, `name:port`, `[v6]:port`; `*` for any).
    pub(crate) fn new(extra: &[String]) -> Self {
        let any = extra.iter().any(|h| h.trim() == "*");
        let mut names: Vec<String> = LOOPBACK.iter().map(|h| (*h).to_owned()).collect();
        names.extend(extra.iter().map(|h| name_of(h)).filter(|h| !h.is_empty()));
        names.sort();
        names.dedup();
        Self { any, names }
    }

    pub(crate) fn allows(&self, host: &str) -> bool {
        self.any || self.names.contains(&name_of(host))
    }
}

/// The name part of a `Host` value, lower-cased, without port, brackets or a trailing dot.
fn name_of(host: &str) -> String {
    let h = host.trim();
    let name = match h.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        // `name:port`; a bare IPv6 address has several colons and no port.
        None if h.matches(':').count() == 1 => h.split(':').next().unwrap_or(""),
        None => h,
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Refuses a request addressed to a host that is not allowed (403).
pub(crate) async fn check(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        let host = String::from_utf8_lossy(host.as_bytes());
        if !state.allowed_hosts.allows(&host) {
            let shown: String = host.chars().take(100).collect();
            return ApiError::forbidden_host(format!(
                "requests for host {shown:?} are not served here (a DNS-rebinding guard); \
                 start the server with --allow-host NAME to allow it"
            ))
            .into_response();
        }
    }
    next.run(req).await
}
