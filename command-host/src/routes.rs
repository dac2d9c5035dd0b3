//! The command host's routes, declared once: routing, 404 and 405 with
//! `Allow`, and the labels metrics and logs use all come from [`ROUTES`].

use domain::{CommentId, PostId};
use hyper::{Method, StatusCode};
use platform::http::Problem;
use platform::routes::{Matched, Route, find};

use crate::commands::{self, Write};

/// Every endpoint of the command host: the writes, each with its handler in
/// [`commands`], and the reads.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    Write(Write),
    History,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

pub const ROUTES: &[Route<Endpoint>] = &[
    write("POST /posts", commands::CREATE_POST),
    write("PUT /posts/{id}/message", commands::EDIT_MESSAGE),
    write("POST /posts/{id}/likes", commands::LIKE_POST),
    write("DELETE /posts/{id}/likes", commands::UNLIKE_POST),
    write("POST /posts/{id}/comments", commands::ADD_COMMENT),
    write("PUT /posts/{id}/comments/{cid}", commands::EDIT_COMMENT),
    write(
        "DELETE /posts/{id}/comments/{cid}",
        commands::REMOVE_COMMENT,
    ),
    write("DELETE /posts/{id}", commands::DELETE_POST),
    Route::new("GET /posts/{id}/events", Endpoint::History),
    Route::new("GET /healthz", Endpoint::Healthz),
    Route::new("GET /readyz", Endpoint::Readyz),
    Route::new("GET /metrics", Endpoint::Metrics),
    Route::new("GET /openapi.json", Endpoint::OpenApi),
];

/// A write route: a line of [`ROUTES`] per command.
const fn write(route: &'static str, command: Write) -> Route<Endpoint> {
    Route::new(route, Endpoint::Write(command))
}

/// Finds the endpoint for a request line: unknown paths are 404, known paths
/// with another method 405.
pub fn route<'a>(method: &Method, path: &'a str) -> Result<Matched<'a, Endpoint>, Problem> {
    find(ROUTES, method, path)
}

/// The post a route names (`{id}`); 400 unless it is a UUID.
pub fn post_id(matched: &Matched<'_, Endpoint>) -> Result<PostId, Problem> {
    PostId::parse(matched.param("id")).map_err(bad_id)
}

/// The post a write goes to: the one its route names, or, for a route
/// without `{id}`, a new one.
pub fn target_post(matched: &Matched<'_, Endpoint>) -> Result<PostId, Problem> {
    match matched.get("id") {
        Some(id) => PostId::parse(id).map_err(bad_id),
        None => Ok(PostId::from_uuid(uuid::Uuid::now_v7())),
    }
}

/// The comment a route names (`{cid}`); 400 unless it is a UUID.
pub fn comment_id(matched: &Matched<'_, Endpoint>) -> Result<CommentId, Problem> {
    CommentId::parse(matched.param("cid")).map_err(bad_id)
}

fn bad_id(error: domain::ValidationError) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b9e4b8e-5f5e-4d39-9d3a-0c6f7a4f2a11";

    /// The route's label, or the status of the refusal; ids are checked as
    /// the host checks them.
    fn check(method: Method, path: &str, expected: Result<&str, u16>) {
        let got = route(&method, path)
            .and_then(|m| {
                if m.label.contains("{id}") {
                    post_id(&m)?;
                }
                if m.label.contains("{cid}") {
                    comment_id(&m)?;
                }
                Ok(m.label)
            })
            .map_err(|p| p.status.as_u16());
        assert_eq!(got, expected, "{method} {path}");
    }

    #[test]
    fn routes_every_endpoint_and_refuses_the_rest() {
        check(Method::POST, "/posts", Ok("POST /posts"));
        check(
            Method::PUT,
            &format!("/posts/{ID}/message"),
            Ok("PUT /posts/{id}/message"),
        );
        check(
            Method::POST,
            &format!("/posts/{ID}/likes"),
            Ok("POST /posts/{id}/likes"),
        );
        check(
            Method::DELETE,
            &format!("/posts/{ID}/likes"),
            Ok("DELETE /posts/{id}/likes"),
        );
        check(
            Method::POST,
            &format!("/posts/{ID}/comments"),
            Ok("POST /posts/{id}/comments"),
        );
        check(
            Method::PUT,
            &format!("/posts/{ID}/comments/{ID}"),
            Ok("PUT /posts/{id}/comments/{cid}"),
        );
        check(
            Method::DELETE,
            &format!("/posts/{ID}/comments/{ID}"),
            Ok("DELETE /posts/{id}/comments/{cid}"),
        );
        check(
            Method::DELETE,
            &format!("/posts/{ID}"),
            Ok("DELETE /posts/{id}"),
        );
        check(
            Method::GET,
            &format!("/posts/{ID}/events"),
            Ok("GET /posts/{id}/events"),
        );
        check(Method::GET, "/healthz", Ok("GET /healthz"));
        check(Method::GET, "/openapi.json", Ok("GET /openapi.json"));
        check(Method::GET, "/posts", Err(405));
        check(Method::PATCH, &format!("/posts/{ID}"), Err(405));
        check(Method::GET, "/nope", Err(404));
        check(Method::GET, "/posts/../etc/passwd", Err(404));
        check(Method::PUT, "/posts/not-a-uuid/message", Err(400));
        let refused = route(&Method::PATCH, &format!("/posts/{ID}/likes")).expect_err("405");
        assert_eq!(refused.allow.as_deref(), Some("DELETE, POST"));
        check(
            Method::DELETE,
            &format!("/posts/{ID}/comments/42"),
            Err(400),
        );
    }

    /// Every route is in the OpenAPI document the host serves, and the
    /// document has no operation the host does not serve.
    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        platform::routes::assert_documented(
            super::ROUTES,
            include_str!("../../docs/openapi/command-host.json"),
        );
    }
}
