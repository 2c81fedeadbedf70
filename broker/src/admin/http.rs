//! Requests and replies of the admin endpoint: authentication, routing and JSON responses.

use std::net::SocketAddr;

use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use super::server::{Request, Response};
use super::Admin;

/// A response before it is written.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    body: String,
    content_type: &'static str,
    /// Methods the path accepts, sent with 405.
    allow: Option<&'static str>,
    /// Whether to ask for a bearer token, sent with 401.
    challenge: bool,
}

/// The endpoint a request is routed to, once its path and method are matched.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    Metrics,
    Status,
    Topics,
    Topic(String),
    DeleteTopic(String),
    SetRetention(String),
    ResetRetention(String),
    Connections,
    Kick(String),
    Tree,
    Reload,
    Bans,
    Ban,
    Unban(String),
    /// Topic and offset, as given in the path.
    DeleteComment(String, String),
}

impl Reply {
    pub(super) fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            body: format!("{value:#}\n"),
            content_type: "application/json",
            allow: None,
            challenge: false,
        }
    }

    pub(super) fn ok(value: &Value) -> Reply {
        Reply::json(200, value)
    }

    /// Returns `{"error": message}` with `status`.
    pub(super) fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "error": message.into() }))
    }

    pub(super) fn text(content_type: &'static str, body: String) -> Reply {
        Reply {
            status: 200,
            body,
            content_type,
            allow: None,
            challenge: false,
        }
    }

    pub(super) fn into_response(self) -> Response {
        let mut response = Response::new(self.status, self.body.into_bytes());
        response.add_header("Content-Type", self.content_type);
        response.add_header("Cache-Control", "no-store");
        if let Some(allow) = self.allow {
            response.add_header("Allow", allow);
        }
        if self.challenge {
            response.add_header("WWW-Authenticate", "Bearer realm=\"chorusd\"");
        }
        response
    }
}

impl Admin {
    /// Authenticates and routes one request, and returns the response.
    pub(super) fn handle(&mut self, request: &Request) -> Reply {
        if let Err(reply) = self.authorize(request) {
            return reply;
        }
        let (path, query) = split_url(request.target());
        let route = match route(request.method(), path) {
            Ok(route) => route,
            Err(reply) => return reply,
        };
        if request.has_body() {
            return Reply::error(
                413,
                "admin endpoints take no request body; send the request without a body, \
                 Content-Length or Transfer-Encoding",
            );
        }
        match route {
            Route::Metrics => self.metrics_text(),
            Route::Status => self.status(),
            Route::Topics => self.topics(),
            Route::Topic(name) => self.topic(&name),
            Route::DeleteTopic(name) => self.delete_topic(&name),
            Route::SetRetention(name) => self.set_retention(&name, query),
            Route::ResetRetention(name) => self.reset_retention(&name),
            Route::Connections => self.connections(query),
            Route::Kick(id) => self.kick(&id),
            Route::Tree => self.tree(),
            Route::Bans => self.bans(),
            Route::Ban => self.ban(query),
            Route::Unban(user) => self.unban(&user),
            Route::DeleteComment(topic, offset) => self.delete_comment(&topic, &offset),
            Route::Reload => self.reload(),
        }
    }

    /// Checks the bearer token, or the peer address when no token is configured.
    fn authorize(&self, request: &Request) -> Result<(), Reply> {
        let Some(token) = &self.token else {
            return authorize_loopback(request.peer());
        };
        let presented = request.header("Authorization").and_then(bearer_token);
        match presented {
            Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(unauthorized("invalid admin token")),
            None => Err(unauthorized(
                "missing admin token: send the header Authorization: Bearer <token>",
            )),
        }
    }
}

fn unauthorized(message: &str) -> Reply {
    let mut reply = Reply::error(401, message);
    reply.challenge = true;
    reply
}

/// Allows loopback peers only, for an endpoint without a token.
fn authorize_loopback(peer: SocketAddr) -> Result<(), Reply> {
    if peer.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(Reply::error(
        403,
        "the admin endpoint has no token configured, so it serves loopback addresses only; set \
         admin.token or admin.token_file to allow other addresses",
    ))
}

/// Returns the token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without stopping at the first difference, so the time taken does not tell how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Splits a request target into its path and query string.
fn split_url(url: &str) -> (&str, &str) {
    url.split_once('?').unwrap_or((url, ""))
}

/// Returns the percent-decoded value of `name` in a query string.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| decode(&value.replace('+', " ")).unwrap_or_default())
    })
}

/// Returns the first parameter name in `query` that is not in `known`, so that a route can
/// refuse a misspelt parameter rather than act without it.
pub(super) fn unknown_param(query: &str, known: &[&str]) -> Option<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
        .find(|key| !known.contains(key))
        .map(str::to_owned)
}

fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Matches a path and method to a route, or returns the 400, 404 or 405 reply.
pub(super) fn route(method: &str, path: &str) -> Result<Route, Reply> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["metrics"] => only(method, "GET", Route::Metrics),
        ["v1", "status"] => only(method, "GET", Route::Status),
        ["v1", "topics"] => only(method, "GET", Route::Topics),
        ["v1", "topics", topic] => {
            let topic = decode(topic)
                .ok_or_else(|| Reply::error(400, "topic name in the path is not valid UTF-8"))?;
            match method {
                "GET" => Ok(Route::Topic(topic)),
                "DELETE" => Ok(Route::DeleteTopic(topic)),
                _ => Err(method_not_allowed("GET, DELETE")),
            }
        }
        ["v1", "topics", topic, "retention"] => {
            let topic = decode(topic)
                .ok_or_else(|| Reply::error(400, "topic name in the path is not valid UTF-8"))?;
            match method {
                "PUT" => Ok(Route::SetRetention(topic)),
                "DELETE" => Ok(Route::ResetRetention(topic)),
                _ => Err(method_not_allowed("PUT, DELETE")),
            }
        }
        ["v1", "topics", topic, "comments", offset] => {
            let topic = decode(topic)
                .ok_or_else(|| Reply::error(400, "topic name in the path is not valid UTF-8"))?;
            only(
                method,
                "DELETE",
                Route::DeleteComment(topic, (*offset).to_owned()),
            )
        }
        ["v1", "topics", ..] => Err(Reply::error(
            404,
            "no such endpoint; a topic name is one path segment with each '/' written as %2F, \
             such as /v1/topics/event%2Ffinal",
        )),
        ["v1", "connections"] => only(method, "GET", Route::Connections),
        ["v1", "connections", id, "kick"] => only(method, "POST", Route::Kick((*id).to_owned())),
        ["v1", "tree"] => only(method, "GET", Route::Tree),
        ["v1", "reload"] => only(method, "POST", Route::Reload),
        ["v1", "bans"] => match method {
            "GET" => Ok(Route::Bans),
            "POST" => Ok(Route::Ban),
            _ => Err(method_not_allowed("GET, POST")),
        },
        ["v1", "bans", user] => {
            let user = decode(user)
                .ok_or_else(|| Reply::error(400, "user id in the path is not valid UTF-8"))?;
            only(method, "DELETE", Route::Unban(user))
        }
        _ => Err(Reply::error(404, format!("no such endpoint: {path}"))),
    }
}

fn only(method: &str, allowed: &'static str, route: Route) -> Result<Route, Reply> {
    if method == allowed {
        Ok(route)
    } else {
        Err(method_not_allowed(allowed))
    }
}

fn method_not_allowed(allowed: &'static str) -> Reply {
    let mut reply = Reply::error(
        405,
        format!("method not allowed; this path accepts {allowed}"),
    );
    reply.allow = Some(allowed);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_path_is_percent_decoded() {
        let route = route("DELETE", "/v1/topics/event%2Ffinal").unwrap();
        assert_eq!(route, Route::DeleteTopic("event/final".into()));
    }

    #[test]
    fn retention_path_is_percent_decoded() {
        let route = route("PUT", "/v1/topics/event%2Ffinal/retention").unwrap();
        assert_eq!(route, Route::SetRetention("event/final".into()));
    }

    #[test]
    fn retention_path_takes_put_and_delete_only() {
        let reply = route("GET", "/v1/topics/live/retention").unwrap_err();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.allow, Some("PUT, DELETE"));
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let reply = route("POST", "/v1/status").unwrap_err();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.allow, Some("GET"));
    }

    #[test]
    fn unknown_path_is_404() {
        assert_eq!(route("GET", "/v2/status").unwrap_err().status, 404);
    }

    #[test]
    fn unencoded_topic_slash_is_404() {
        assert_eq!(route("DELETE", "/v1/topics/a/b").unwrap_err().status, 404);
    }

    #[test]
    fn moderation_paths_are_percent_decoded() {
        let route_of = |method, path| route(method, path).unwrap();
        assert_eq!(route_of("POST", "/v1/bans"), Route::Ban);
        assert_eq!(
            route_of("DELETE", "/v1/bans/user%201"),
            Route::Unban("user 1".into())
        );
        assert_eq!(
            route_of("DELETE", "/v1/topics/a%2Fb/comments/7"),
            Route::DeleteComment("a/b".into(), "7".into())
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn loopback_peer_is_allowed_without_token() {
        let v4: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert!(authorize_loopback(v4).is_ok());
        assert!(authorize_loopback(mapped).is_ok());
        assert_eq!(authorize_loopback(remote).unwrap_err().status, 403);
    }

    #[test]
    fn unknown_param_is_found() {
        let known = ["user", "reason"];
        assert_eq!(unknown_param("user=a&reason=b", &known), None);
        assert_eq!(unknown_param("", &known), None);
        assert_eq!(
            unknown_param("user=a&topic=t", &known).as_deref(),
            Some("topic")
        );
    }

    #[test]
    fn query_param_is_decoded() {
        assert_eq!(
            query_param("topic=a%2Fb&limit=5", "topic").as_deref(),
            Some("a/b")
        );
        assert_eq!(
            query_param("topic=a%2Fb&limit=5", "limit").as_deref(),
            Some("5")
        );
        assert_eq!(query_param("topic=a", "limit"), None);
    }
}
