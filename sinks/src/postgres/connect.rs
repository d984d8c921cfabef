use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::SinkError;

/// How long a connection attempt may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection string with every password replaced by `***`, for
/// messages and logs, in each form libpq and tokio-postgres take: a URL's
/// user-info (`postgres://user:secret@host/db`), a URL's `password`
/// parameter (`...?password=secret`), and a key=value string
/// (`host=h password=secret`, or `password='se cret'` quoted).
pub fn redact_url(dsn: &str) -> String {
    match dsn.find("://") {
        Some(scheme) => redact_uri(dsn, scheme + 3),
        None => redact_key_values(dsn),
    }
}

/// [`redact_url`] for a URL whose authority starts at `start`.
fn redact_uri(url: &str, start: usize) -> String {
    let rest = &url[start..];
    // The user-info ends at the last '@' before the path (libpq reads the
    // authority up to the first '/').
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    let after_userinfo = match rest[..authority_end].rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(&rest[..at]),
            }
            at
        }
        None => 0,
    };
    let tail = &rest[after_userinfo..];
    match tail.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// [`redact_url`] for a key=value string: `key = value` pairs separated by
/// spaces, a value either bare (up to the next space) or single-quoted
/// with backslash escapes.
fn redact_key_values(dsn: &str) -> String {
    let bytes = dsn.as_bytes();
    let mut out = String::with_capacity(dsn.len());
    let mut i = 0;
    while i < bytes.len() {
        // Copy whitespace, then read one key.
        if bytes[i].is_ascii_whitespace() {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &dsn[key_start..i];
        out.push_str(key);
        // Spaces and the '='.
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'=') {
            out.push(bytes[i] as char);
            i += 1;
        }
        // The value.
        let value_start = i;
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        if key.eq_ignore_ascii_case("password") {
            out.push_str("***");
        } else {
            out.push_str(&dsn[value_start..i]);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_in_every_form_of_connection_string() {
        let cases = [
            ("postgres://app:s3cret@db:5432/stockflow", "postgres://app:***@db:5432/stockflow"),
            ("postgresql://app:p@ss:w0rd@db/stockflow", "postgresql://app:***@db/stockflow"),
            (
                "postgres://app@db/stockflow?sslmode=require&password=s3cret&application_name=x",
                "postgres://app@db/stockflow?sslmode=require&password=***&application_name=x",
            ),
            ("postgres://app:s3cret@db/x?Password=other", "postgres://app:***@db/x?Password=***"),
            ("host=db user=app password=s3cret dbname=x", "host=db user=app password=*** dbname=x"),
            ("host=db password = s3cret", "host=db password = ***"),
            ("host=db password='se cret \\' more' dbname=x", "host=db password=*** dbname=x"),
            // Nothing to hide: unchanged.
            ("postgres://app@db/stockflow", "postgres://app@db/stockflow"),
            ("host=db user=app", "host=db user=app"),
            ("not a url", "not a url"),
        ];
        for (dsn, want) in cases {
            let shown = redact_url(dsn);
            assert_eq!(shown, want, "{dsn}");
            for secret in ["s3cret", "p@ss", "w0rd", "other", "se cret"] {
                assert!(!shown.contains(secret), "{dsn} -> {shown}");
            }
        }
    }
}
