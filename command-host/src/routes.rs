//! Routing: the command host's URL space as a closed enum, matched on method and
//! path segments. No router crate: the whole table fits on one screen.

use domain::{CommentId, PostId};
use hyper::{Method, StatusCode};

use crate::http::{Problem, path_segments};

/// Every endpoint of the command host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    CreatePost,
    EditMessage(PostId),
    LikePost(PostId),
    UnlikePost(PostId),
    AddComment(PostId),
    EditComment(PostId, CommentId),
    RemoveComment(PostId, CommentId),
    DeletePost(PostId),
    History(PostId),
    Healthz,
    Readyz,
    Metrics,
}

impl Endpoint {
    /// The route label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::CreatePost => "POST /posts",
            Endpoint::EditMessage(_) => "PUT /posts/{id}/message",
            Endpoint::LikePost(_) => "POST /posts/{id}/likes",
            Endpoint::UnlikePost(_) => "DELETE /posts/{id}/likes",
            Endpoint::AddComment(_) => "POST /posts/{id}/comments",
            Endpoint::EditComment(..) => "PUT /posts/{id}/comments/{cid}",
            Endpoint::RemoveComment(..) => "DELETE /posts/{id}/comments/{cid}",
            Endpoint::DeletePost(_) => "DELETE /posts/{id}",
            Endpoint::History(_) => "GET /posts/{id}/events",
            Endpoint::Healthz => "GET /healthz",
            Endpoint::Readyz => "GET /readyz",
            Endpoint::Metrics => "GET /metrics",
        }
    }
}

/// Finds the endpoint for a request line. Unknown paths are 404, known paths
/// with another method 405, and ids that are not UUIDs 400.
pub fn route(method: &Method, path: &str) -> Result<Endpoint, Problem> {
    let segments = path_segments(path);
    let post = |raw: &str| PostId::parse(raw).map_err(bad_id);
    let comment = |raw: &str| CommentId::parse(raw).map_err(bad_id);
    let m = method.clone();
    let endpoint = match (segments.as_slice(), m) {
        (["healthz"], Method::GET) => Endpoint::Healthz,
        (["readyz"], Method::GET) => Endpoint::Readyz,
        (["metrics"], Method::GET) => Endpoint::Metrics,
        (["posts"], Method::POST) => Endpoint::CreatePost,
        (["posts", id], Method::DELETE) => Endpoint::DeletePost(post(id)?),
        (["posts", id, "message"], Method::PUT) => Endpoint::EditMessage(post(id)?),
        (["posts", id, "likes"], Method::POST) => Endpoint::LikePost(post(id)?),
        (["posts", id, "likes"], Method::DELETE) => Endpoint::UnlikePost(post(id)?),
        (["posts", id, "comments"], Method::POST) => Endpoint::AddComment(post(id)?),
        (["posts", id, "comments", cid], Method::PUT) => {
            Endpoint::EditComment(post(id)?, comment(cid)?)
        }
        (["posts", id, "comments", cid], Method::DELETE) => {
            Endpoint::RemoveComment(post(id)?, comment(cid)?)
        }
        (["posts", id, "events"], Method::GET) => Endpoint::History(post(id)?),
        (
            ["healthz" | "readyz" | "metrics"]
            | ["posts"]
            | ["posts", _]
            | ["posts", _, "message" | "likes" | "comments" | "events"]
            | ["posts", _, "comments", _],
            _,
        ) => {
            return Err(Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            ));
        }
        _ => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("no such resource: {path}"),
            ));
        }
    };
    Ok(endpoint)
}

fn bad_id(error: domain::ValidationError) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b9e4b8e-5f5e-4d39-9d3a-0c6f7a4f2a11";

    fn check(method: Method, path: &str, expected: Result<&str, u16>) {
        let got = route(&method, path)
            .map(Endpoint::label)
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
        check(Method::GET, "/posts", Err(405));
        check(Method::PATCH, &format!("/posts/{ID}"), Err(405));
        check(Method::GET, "/nope", Err(404));
        check(Method::GET, "/posts/../etc/passwd", Err(404));
        check(Method::PUT, "/posts/not-a-uuid/message", Err(400));
        check(
            Method::DELETE,
            &format!("/posts/{ID}/comments/42"),
            Err(400),
        );
    }
}
