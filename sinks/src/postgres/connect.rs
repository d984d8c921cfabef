use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::SinkError;

/// How long a connection attempt may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connects to `url` (a libpq URL or key=value string) and drives the
/// connection on the current tokio runtime.
pub async fn connect(url: &str) -> Result<Client, SinkError> {
    let shown = redact_url(url);
    let fut = tokio_postgres::connect(url, NoTls);
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(cause)) => return Err(SinkError::Connect { url: shown, cause }),
        Err(_) => return Err(SinkError::ConnectTimeout { url: shown, timeout: CONNECT_TIMEOUT }),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}
