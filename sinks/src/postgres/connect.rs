use std::ops::Range;
use std::time::Duration;

use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::{Client, NoTls};

use crate::SinkError;

/// How long a connection attempt may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One setting of a connection string: its key, and where the whole
/// setting and its raw value (still quoted or percent-encoded) sit.
#[derive(Debug)]
struct Setting<'a> {
    key: &'a str,
    /// What to cut to remove the setting (empty for a URL's user-info
    /// password, which is not removed, only hidden).
    whole: Range<usize>,
    value: Range<usize>,
    /// In a URL (percent-encoded) rather than a key=value string (quoted).
    in_url: bool,
}

/// The settings of `dsn`, in each form libpq and tokio-postgres take: a
/// URL (`postgres://user:password@host/db?key=value&...`, the user-info
/// password as the setting `password`) or a key=value string (`key = value`
/// pairs separated by spaces, a value bare or single-quoted with backslash
/// escapes).
fn settings(dsn: &str) -> Vec<Setting<'_>> {
    match dsn.find("://") {
        Some(scheme) => url_settings(dsn, scheme + 3),
        None => key_value_settings(dsn),
    }
}

fn url_settings(url: &str, start: usize) -> Vec<Setting<'_>> {
    let mut out = Vec::new();
    let rest = &url[start..];
    // The user-info ends at the last '@' before the query: libpq reads the
    // authority up to the first '/', tokio-postgres the user-info up to
    // the '@' (a password may hold an unencoded '/'). Taking the wider
    // reading hides a password either way; an '@' in the path only hides
    // more than needed.
    let authority_end = rest.find('?').unwrap_or(rest.len());
    let mut tail_start = start;
    if let Some(at) = rest[..authority_end].rfind('@') {
        if let Some(colon) = rest[..at].find(':') {
            let value = start + colon + 1..start + at;
            out.push(Setting { key: "password", whole: value.start..value.start, value, in_url: true });
        }
        tail_start = start + at;
    }
    let Some(q) = url[tail_start..].find('?') else { return out };
    let mut pos = tail_start + q + 1;
    for param in url[pos..].split('&') {
        let (begin, end) = (pos, pos + param.len());
        pos = end + 1;
        let Some(eq) = param.find('=') else { continue };
        // Cut the '&' after it, or else the one (or the '?') before it.
        let whole = if end < url.len() { begin..end + 1 } else { begin - 1..end };
        out.push(Setting { key: &param[..eq], whole, value: begin + eq + 1..end, in_url: true });
    }
    out
}

fn key_value_settings(dsn: &str) -> Vec<Setting<'_>> {
    let bytes = dsn.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &dsn[key_start..i];
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'=') {
            i += 1;
        }
        let value_start = i;
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else {
            // A backslash escapes the next character (`se\ cret` is one value).
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = i.min(bytes.len());
        }
        out.push(Setting { key, whole: key_start..i, value: value_start..i, in_url: false });
    }
    out
}

/// A setting's value as text: percent-decoded (URL) or unquoted (key=value).
fn decoded(dsn: &str, s: &Setting<'_>) -> String {
    let raw = &dsn[s.value.clone()];
    if s.in_url {
        let bytes = raw.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = raw.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    } else {
        let inner = raw.strip_prefix('\'').map(|r| r.strip_suffix('\'').unwrap_or(r)).unwrap_or(raw);
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
        }
        out
    }
}

/// The connection string with every password replaced by `***`, for
/// messages and logs, in each form libpq and tokio-postgres take: a URL's
/// user-info (`postgres://user:secret@host/db`), a URL's `password`
/// parameter (`...?password=secret`), and a key=value string
/// (`host=h password=secret`, or `password='se cret'` quoted); libpq's
/// `sslpassword` (the client key's) too.
pub fn redact_url(dsn: &str) -> String {
    let mut passwords: Vec<Range<usize>> = settings(dsn)
        .into_iter()
        .filter(|s| s.key.eq_ignore_ascii_case("password") || s.key.eq_ignore_ascii_case("sslpassword"))
        .map(|s| s.value)
        .collect();
    passwords.sort_by_key(|r| std::cmp::Reverse(r.start));
    let mut out = dsn.to_string();
    for r in passwords {
        out.replace_range(r, "***");
    }
    out
}

/// How to secure the connection, from libpq's `sslmode` and `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `disable`, `allow` or `prefer` (the default): no TLS here; `require`,
    /// `verify-ca`, `verify-full`: TLS or no connection.
    pub mode: String,
    /// The CA certificates (PEM) a server certificate must chain to; with
    /// it, only these are trusted (as libpq does).
    pub root_cert: Option<std::path::PathBuf>,
}

/// The TLS settings of `dsn`, and `dsn` as tokio-postgres takes it: without
/// `sslrootcert` (libpq's, unknown to tokio-postgres) and with
/// `verify-ca`/`verify-full` as `require` (the verification is the
/// connector's, set up from these settings).
pub fn split_tls(dsn: &str) -> (String, TlsSettings) {
    let mut tls = TlsSettings { mode: "prefer".into(), root_cert: None };
    let mut edits: Vec<(Range<usize>, &str)> = Vec::new();
    for s in settings(dsn) {
        match s.key {
            "sslmode" => {
                tls.mode = decoded(dsn, &s);
                if tls.mode.starts_with("verify-") {
                    edits.push((s.value.clone(), "require"));
                }
            }
            "sslrootcert" => {
                tls.root_cert = Some(decoded(dsn, &s).into());
                edits.push((s.whole.clone(), ""));
            }
            _ => {}
        }
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = dsn.to_string();
    for (r, with) in edits {
        out.replace_range(r, with);
    }
    (out, tls)
}

/// The TLS connector for `tls`: `require` encrypts without checking the
/// server (libpq's `require`; with `sslrootcert`, as `verify-ca`),
/// `verify-ca` checks the chain, `verify-full` the chain and the host name.
fn connector(tls: &TlsSettings, shown: &str) -> Result<MakeTlsConnector, SinkError> {
    let config = |why: String| SinkError::Config(format!("PostgreSQL at {shown}: {why}"));
    let mut b = native_tls::TlsConnector::builder();
    let verify_chain = tls.mode != "require" || tls.root_cert.is_some();
    b.danger_accept_invalid_certs(!verify_chain);
    b.danger_accept_invalid_hostnames(tls.mode != "verify-full");
    if let Some(path) = &tls.root_cert {
        let pem = std::fs::read(path)
            .map_err(|e| config(format!("cannot read sslrootcert {}: {e}", path.display())))?;
        let certs = native_tls::Certificate::stack_from_pem(&pem)
            .map_err(|e| config(format!("sslrootcert {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(config(format!("sslrootcert {} holds no certificate", path.display())));
        }
        b.disable_built_in_roots(true);
        for c in certs {
            b.add_root_certificate(c);
        }
    }
    let c = b.build().map_err(|e| config(format!("TLS setup: {e}")))?;
    Ok(MakeTlsConnector::new(c))
}

/// Connects to `url` (a libpq URL or key=value string) and drives the
/// connection on the current tokio runtime.
///
/// TLS as libpq's `sslmode` says: `disable`, `allow`, `prefer` (the
/// default) connect without it; `require`, `verify-ca` and `verify-full`
/// (with `sslrootcert`, a PEM file of the CAs to trust) use it or fail. A
/// failed handshake (an untrusted certificate, a wrong host name) is
/// [`SinkError::Tls`], permanent: waiting does not fix a certificate.
pub async fn connect(url: &str) -> Result<Client, SinkError> {
    let shown = redact_url(url);
    let (plain, tls) = split_tls(url);
    let timed_out = || SinkError::ConnectTimeout { url: shown.clone(), timeout: CONNECT_TIMEOUT };
    if matches!(tls.mode.as_str(), "require" | "verify-ca" | "verify-full") {
        let fut = tokio_postgres::connect(&plain, connector(&tls, &shown)?);
        match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
            Ok(Ok((client, connection))) => {
                drive(connection);
                Ok(client)
            }
            Ok(Err(cause)) if is_tls_failure(&cause) => Err(SinkError::Tls { url: shown, cause }),
            Ok(Err(cause)) => Err(SinkError::Connect { url: shown, cause }),
            Err(_) => Err(timed_out()),
        }
    } else {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(&plain, NoTls)).await {
            Ok(Ok((client, connection))) => {
                drive(connection);
                Ok(client)
            }
            Ok(Err(cause)) => Err(SinkError::Connect { url: shown, cause }),
            Err(_) => Err(timed_out()),
        }
    }
}

/// Drives a connection on the current runtime until it closes.
fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
}

/// Whether connecting failed in the TLS handshake (the cause is the TLS
/// library's error, or the server refused TLS).
fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.downcast_ref::<native_tls::Error>().is_some() {
            return true;
        }
        cause = c.source();
    }
    e.to_string().contains("server does not support TLS")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn tls_settings_are_taken_out_for_the_connector() {
        use super::split_tls;
        let (dsn, tls) = split_tls("postgres://u:p@db/x?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem");
        assert_eq!(dsn, "postgres://u:p@db/x?sslmode=require");
        assert_eq!(
            (tls.mode.as_str(), tls.root_cert.as_deref()),
            ("verify-full", Some("/tmp/ca.pem".as_ref()))
        );
        let (dsn, tls) =
            split_tls("postgres://db/x?sslrootcert=/tmp/ca.pem&sslmode=verify-ca&application_name=a");
        assert_eq!(dsn, "postgres://db/x?sslmode=require&application_name=a");
        assert_eq!(tls.mode, "verify-ca");
        let (dsn, tls) = split_tls("host=db sslmode=verify-full sslrootcert='/tmp/my ca.pem' dbname=x");
        assert_eq!(dsn, "host=db sslmode=require  dbname=x");
        assert_eq!(tls.root_cert.as_deref(), Some("/tmp/my ca.pem".as_ref()));
        let (dsn, tls) = split_tls("postgres://u:p@db/x");
        assert_eq!((dsn.as_str(), tls.mode.as_str(), tls.root_cert), ("postgres://u:p@db/x", "prefer", None));
    }

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

    #[test]
    fn percent_encoded_passwords_are_hidden_whole() {
        let cases = [
            // '@', '/' and ' ' percent-encoded in the user-info password.
            ("postgres://app:p%40ss%2Fw%20rd@db/x", "postgres://app:***@db/x"),
            // '&' and '=' percent-encoded in a `password` parameter.
            (
                "postgres://app@db/x?password=p%26q%3Dr&sslmode=disable",
                "postgres://app@db/x?password=***&sslmode=disable",
            ),
        ];
        for (dsn, want) in cases {
            assert_eq!(redact_url(dsn), want, "{dsn}");
        }
    }

    #[test]
    fn url_redaction_keeps_user_hosts_ports_database_and_other_parameters() {
        let cases = [
            (
                "postgres://app:s3cret@db1.example:6543,db2:5432/stockflow?sslmode=verify-full\
                 &application_name=stockflow%20run&connect_timeout=5",
                "postgres://app:***@db1.example:6543,db2:5432/stockflow?sslmode=verify-full\
                 &application_name=stockflow%20run&connect_timeout=5",
            ),
            // No path: the authority runs to the end.
            ("postgres://app:s3cret@db:5432", "postgres://app:***@db:5432"),
            // An empty password is still marked, not left looking absent.
            ("postgres://app:@db/x", "postgres://app:***@db/x"),
            // The last parameter, and every `password` when repeated.
            (
                "postgres://app@db/x?sslmode=disable&password=s3cret",
                "postgres://app@db/x?sslmode=disable&password=***",
            ),
            ("postgres://app@db/x?password=a&password=b", "postgres://app@db/x?password=***&password=***"),
            // A parameter without '=' has no value to hide.
            ("postgres://app@db/x?password", "postgres://app@db/x?password"),
        ];
        for (dsn, want) in cases {
            assert_eq!(redact_url(dsn), want, "{dsn}");
        }
    }

    #[test]
    fn key_value_redaction_keeps_other_settings_spacing_and_quoting() {
        let cases = [
            (
                "host=db user='app user' password='se cret' application_name='x y'",
                "host=db user='app user' password=*** application_name='x y'",
            ),
            // Tabs and newlines separate settings too, and stay as they were.
            ("host=db\tpassword=s3cret\nuser=app", "host=db\tpassword=***\nuser=app"),
            ("password = 'se cret'   sslmode=require", "password = ***   sslmode=require"),
            // An empty quoted password.
            ("password='' host=db", "password=*** host=db"),
            // `password=` inside another setting's quoted value is not a setting.
            (
                "application_name='password=x' password=y host=db",
                "application_name='password=x' password=*** host=db",
            ),
        ];
        for (dsn, want) in cases {
            assert_eq!(redact_url(dsn), want, "{dsn:?}");
        }
    }

    #[test]
    fn passwords_that_tokio_postgres_reads_wider_than_libpq_are_hidden_whole() {
        let cases = [
            // An unencoded '/' in the user-info password.
            ("postgres://app:pa/ss@db/x", "postgres://app:***@db/x"),
            // A backslash-escaped space in an unquoted key=value password.
            ("host=db password=se\\ cret user=app", "host=db password=*** user=app"),
            // The client key's password.
            ("host=db sslpassword=keypass", "host=db sslpassword=***"),
            ("postgres://app@db/x?sslpassword=keypass", "postgres://app@db/x?sslpassword=***"),
        ];
        for (dsn, want) in cases {
            let shown = redact_url(dsn);
            assert_eq!(shown, want, "{dsn}");
            for secret in ["pa/ss", "cret", "keypass"] {
                assert!(!shown.contains(secret), "{dsn} -> {shown}");
            }
        }
    }
}
