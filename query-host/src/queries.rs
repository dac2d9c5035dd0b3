//! The query host's requests as a closed enum, parsed from method, path, query
//! string and headers. Everything a client can get wrong is refused here, with a
//! 400 that names it.

use domain::{PostId, UserId};
use hyper::{HeaderMap, Method, StatusCode};

use platform::http::{Problem, query_pairs};
use platform::routes::{Route, find};

use crate::cursor::{Cursor, ListKind};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostFilter {
    pub author: Option<UserId>,
    pub min_likes: Option<i32>,
    pub has_comments: Option<bool>,
}

/// Every request the query host answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    ListPosts {
        filter: PostFilter,
        limit: i64,
        cursor: Option<Cursor>,
    },
    GetPost {
        id: PostId,
        min_version: Option<u64>,
        if_none_match: Option<u64>,
    },
    ListComments {
        id: PostId,
        limit: i64,
        cursor: Option<Cursor>,
    },
    /// The signed-in user's notifications; the token is checked by the handler.
    Notifications {
        limit: i64,
        cursor: Option<Cursor>,
    },
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

/// What a path names, before its parameters are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Posts,
    Post,
    Comments,
    Notifications,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

/// The query host's routes, declared once: routing, 404 and 405 with `Allow`,
/// and the labels metrics use all come from here.
pub const ROUTES: &[Route<Resource>] = &[
    Route::new("GET /posts", Resource::Posts),
    Route::new("GET /posts/{id}", Resource::Post),
    Route::new("GET /posts/{id}/comments", Resource::Comments),
    Route::new("GET /me/notifications", Resource::Notifications),
    Route::new("GET /healthz", Resource::Healthz),
    Route::new("GET /readyz", Resource::Readyz),
    Route::new("GET /metrics", Resource::Metrics),
    Route::new("GET /openapi.json", Resource::OpenApi),
];

fn bad(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, detail)
}

/// The query string, checked against the parameters a route takes.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, Problem> {
        let pairs = query_pairs(query)?;
        for (i, (key, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&key.as_str()) {
                return Err(bad(format!(
                    "unknown query parameter {key:?}; this resource takes: {}",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(bad(format!("query parameter {key:?} is given twice")));
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn limit(&self) -> Result<i64, Problem> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(bad(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, got {raw:?}"
                ))),
            },
        }
    }

    fn cursor(&self, kind: ListKind) -> Result<Option<Cursor>, Problem> {
        self.get("cursor")
            .map(|raw| Cursor::decode(raw, kind).map_err(bad))
            .transpose()
    }
}

/// Parses a request into a [`Query`] and its route's label: 404 for unknown
/// paths, 405 for other methods, 400 for bad parameters.
pub fn parse(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Query, &'static str), Problem> {
    let matched = find(ROUTES, method, path)?;
    let post_id = || PostId::parse(matched.param("id")).map_err(|e| bad(e.to_string()));
    let query = match matched.endpoint {
        Resource::Healthz => Query::Healthz,
        Resource::Readyz => Query::Readyz,
        Resource::Metrics => Query::Metrics,
        Resource::OpenApi => Query::OpenApi,
        Resource::Posts => {
            let params = Params::parse(
                query,
                &["limit", "cursor", "author", "min_likes", "has_comments"],
            )?;
            let author = params
                .get("author")
                .map(|raw| UserId::parse(raw).map_err(|e| bad(format!("author: {}", e.reason))))
                .transpose()?;
            let min_likes = params
                .get("min_likes")
                .map(|raw| {
                    raw.parse::<i32>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        bad(format!(
                            "min_likes must be a whole number of at least 0, got {raw:?}"
                        ))
                    })
                })
                .transpose()?;
            let has_comments = params
                .get("has_comments")
                .map(|raw| match raw {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(bad(format!(
                        "has_comments must be true or false, got {raw:?}"
                    ))),
                })
                .transpose()?;
            Query::ListPosts {
                filter: PostFilter {
                    author,
                    min_likes,
                    has_comments,
                },
                limit: params.limit()?,
                cursor: params.cursor(ListKind::Posts)?,
            }
        }
        Resource::Post => {
            let params = Params::parse(query, &["min_version"])?;
            let min_version = params
                .get("min_version")
                .map(|raw| {
                    raw.parse::<u64>().map_err(|_| {
                        bad(format!("min_version must be a whole number, got {raw:?}"))
                    })
                })
                .transpose()?;
            let if_none_match = headers
                .get(hyper::header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.trim()
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .parse::<u64>()
                        .ok()
                });
            Query::GetPost {
                id: post_id()?,
                min_version,
                if_none_match,
            }
        }
        Resource::Comments => {
            let params = Params::parse(query, &["limit", "cursor"])?;
            Query::ListComments {
                id: post_id()?,
                limit: params.limit()?,
                cursor: params.cursor(ListKind::Comments)?,
            }
        }
        Resource::Notifications => {
            let params = Params::parse(query, &["limit", "cursor"])?;
            Query::Notifications {
                limit: params.limit()?,
                cursor: params.cursor(ListKind::Notifications)?,
            }
        }
    };
    Ok((query, matched.label))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b9e4b8e-5f5e-4d39-9d3a-0c6f7a4f2a11";

    fn check(path: &str, query: Option<&str>, expected: Result<&str, u16>) {
        let got = parse(&Method::GET, path, query, &HeaderMap::new())
            .map(|(_, label)| label)
            .map_err(|p| p.status.as_u16());
        assert_eq!(got, expected, "{path}?{query:?}");
    }

    #[test]
    fn parses_every_query_and_refuses_bad_parameters() {
        check("/posts", None, Ok("GET /posts"));
        check(
            "/posts",
            Some("author=alice&min_likes=10&has_comments=true&limit=5"),
            Ok("GET /posts"),
        );
        check(
            &format!("/posts/{ID}"),
            Some("min_version=3"),
            Ok("GET /posts/{id}"),
        );
        check(
            &format!("/posts/{ID}/comments"),
            Some("limit=100"),
            Ok("GET /posts/{id}/comments"),
        );
        check("/me/notifications", None, Ok("GET /me/notifications"));
        for bad_query in [
            "limit=0",
            "limit=-1",
            "limit=101",
            "limit=abc",
            "sort=likes",
            "min_likes=-1",
            "min_likes=x",
            "has_comments=yes",
            "author=not%20valid",
            "cursor=zzz",
            "limit=5&limit=6",
        ] {
            check("/posts", Some(bad_query), Err(400));
        }
        check("/posts/not-a-uuid", None, Err(400));
        check(&format!("/posts/{ID}"), Some("min_version=-2"), Err(400));
        check("/elsewhere", None, Err(404));
        let refused = parse(&Method::POST, "/posts", None, &HeaderMap::new()).expect_err("405");
        assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.allow.as_deref(), Some("GET, HEAD"));
    }

    /// Every route is in the OpenAPI document the host serves, and the
    /// document has no operation the host does not serve.
    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        platform::routes::assert_documented(
            super::ROUTES,
            include_str!("../../docs/openapi/query-host.json"),
        );
    }
}
