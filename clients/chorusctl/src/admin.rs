//! Requests to the broker's HTTP admin endpoint, and the mapping of their failures to exit
//! statuses.

use std::io;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use ureq::http::Response;
use ureq::Body;

use crate::cli::Cli;
use crate::failure::{Failure, Status};

/// Time allowed to open the connection to the admin endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for a whole request. The broker waits up to 2 s for its workers, so this leaves
/// room for a slow response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response read, in bytes; a list of 100,000 connections fits.
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// Bytes that stay as they are in a path segment; everything else, `/` included, is
/// percent-encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// A client of one admin endpoint.
#[derive(Debug)]
pub(crate) struct AdminClient {
    agent: ureq::Agent,
    /// `http://host:port`, without a trailing slash.
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// Builds a client for `--admin`, with the admin token from the command line or the
    /// environment.
    pub(crate) fn new(cli: &Cli) -> Result<AdminClient, Failure> {
        let base = base_url(&cli.admin)?;
        let token = crate::resolve_token(cli, "CHORUS_ADMIN_TOKEN")?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(AdminClient {
            agent,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value, Failure> {
        let request = self.authorize(self.agent.get(self.url(path)));
        self.finish(request.call())
    }

    pub(crate) fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let request = self.authorize(self.agent.post(self.url(path)));
        let result = match body {
            Some(body) => request
                .content_type("application/json")
                .send(body.to_string()),
            None => request.send_empty(),
        };
        self.finish(result)
    }

    pub(crate) fn put(&self, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let request = self.authorize(self.agent.put(self.url(path)));
        let result = match body {
            Some(body) => request
                .content_type("application/json")
                .send(body.to_string()),
            None => request.send_empty(),
        };
        self.finish(result)
    }

    pub(crate) fn delete(&self, path: &str) -> Result<Value, Failure> {
        let request = self.authorize(self.agent.delete(self.url(path)));
        self.finish(request.call())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// Returns the JSON body of a 2xx response, or the failure a response or error means.
    fn finish(&self, result: Result<Response<Body>, ureq::Error>) -> Result<Value, Failure> {
        let mut response = result.map_err(|e| self.request_failure(e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|e| self.request_failure(e))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return body.ok_or_else(|| {
                let message = format!(
                    "the admin endpoint at {} sent a response that is not JSON",
                    self.base
                );
                Failure::new(Status::Broken, message)
            });
        }
        Err(status_failure(status, body.as_ref(), &text))
    }

    fn request_failure(&self, error: ureq::Error) -> Failure {
        let status = error_status(&error);
        let message = if status == Status::CannotConnect {
            format!(
                "cannot reach the admin endpoint at {}: {error}\nhint: is chorusd running with \
                 its admin endpoint there? Set --admin or CHORUS_ADMIN.",
                self.base
            )
        } else {
            format!(
                "request to the admin endpoint at {} failed: {error}",
                self.base
            )
        };
        Failure::new(status, message)
    }
}

/// Encodes a topic name as one path segment, with `/` as `%2F`.
pub(crate) fn path_segment(text: &str) -> String {
    utf8_percent_encode(text, PATH_SEGMENT).to_string()
}

/// Turns `host:port`, or an `http://` URL, into the base URL of the endpoint.
fn base_url(admin: &str) -> Result<String, Failure> {
    if let Some(rest) = admin.strip_prefix("http://") {
        return Ok(format!("http://{}", rest.trim_end_matches('/')));
    }
    if admin.contains("://") {
        let message = format!(
            "invalid admin address {admin:?}: expected host:port, such as 127.0.0.1:7480 (the \
             admin endpoint speaks plain HTTP)"
        );
        return Err(Failure::new(Status::Usage, message));
    }
    Ok(format!("http://{admin}"))
}

/// Maps a failed request to an exit status: failures to reach the endpoint are "cannot
/// connect", anything after that is "broken".
fn error_status(error: &ureq::Error) -> Status {
    match error {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::BadUri(_) => {
            Status::CannotConnect
        }
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            Status::CannotConnect
        }
        ureq::Error::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::InvalidInput => Status::CannotConnect,
            _ => Status::Broken,
        },
        _ => Status::Broken,
    }
}

/// Maps an error response to a failure with the server's message.
fn status_failure(status: u16, body: Option<&Value>, text: &str) -> Failure {
    let message = body
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
        .map_or_else(|| text.trim().to_owned(), str::to_owned);
    match status {
        401 => Failure::new(
            Status::Rejected,
            format!(
                "admin endpoint rejected the request (401): {message}\nhint: set --token, \
                 --token-file or CHORUS_ADMIN_TOKEN to the broker's admin.token"
            ),
        ),
        501 => Failure::new(Status::Rejected, format!("not available (501): {message}")),
        400..=499 => Failure::new(Status::Rejected, format!("{message} ({status})")),
        _ => Failure::new(
            Status::Broken,
            format!("admin endpoint failed ({status}): {message}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn topic_slash_is_encoded() {
        assert_eq!(
            path_segment("event/2026-final.x_y"),
            "event%2F2026-final.x_y"
        );
    }

    #[test]
    fn host_port_becomes_http_url() {
        assert_eq!(base_url("127.0.0.1:7480").unwrap(), "http://127.0.0.1:7480");
        assert_eq!(base_url("http://[::1]:7480/").unwrap(), "http://[::1]:7480");
    }

    #[test]
    fn https_is_a_usage_error() {
        assert_eq!(base_url("https://x:1").unwrap_err().status, Status::Usage);
    }

    #[test]
    fn not_found_is_rejected() {
        let failure = status_failure(404, Some(&json!({"error": "topic x not found"})), "");
        assert_eq!(failure.status, Status::Rejected);
        assert_eq!(failure.message, "topic x not found (404)");
    }

    #[test]
    fn not_implemented_is_rejected() {
        let body = json!({"error": "banning users needs moderation", "missing": "moderation"});
        let failure = status_failure(501, Some(&body), "");
        assert_eq!(failure.status, Status::Rejected);
        assert!(failure.message.contains("banning users needs moderation"));
    }

    #[test]
    fn server_error_is_broken() {
        let failure = status_failure(500, None, "boom");
        assert_eq!(failure.status, Status::Broken);
        assert!(failure.message.contains("boom"));
    }

    #[test]
    fn refused_connection_is_cannot_connect() {
        let error = ureq::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(error_status(&error), Status::CannotConnect);
    }
}
