//! Route tables. Each host declares its routes once, as `"METHOD /path/{param}"`
//! and what it leads to; matching, 404 and 405 with `Allow`, and the label that
//! metrics and logs use all come from that one table. No router crate: a table
//! fits on one screen and a linear scan over a dozen routes is nothing.

use hyper::{Method, StatusCode};

use crate::http::{Problem, path_segments};

/// One route: its label (`"POST /posts/{id}/likes"`, which is also what
/// metrics call it) and what it leads to.
#[derive(Debug, Clone, Copy)]
pub struct Route<E> {
    pub label: &'static str,
    pub endpoint: E,
}

impl<E> Route<E> {
    pub const fn new(label: &'static str, endpoint: E) -> Self {
        Self { label, endpoint }
    }

    /// The method and path template of the label.
    pub fn method_and_template(&self) -> (&'static str, &'static str) {
        self.label
            .split_once(' ')
            .expect("a route label is \"METHOD /path\"")
    }
}

/// The route a request matched, with its path parameters.
#[derive(Debug)]
pub struct Matched<'a, E> {
    pub endpoint: E,
    pub label: &'static str,
    params: Vec<(&'static str, &'a str)>,
}

impl<E> Matched<'_, E> {
    /// The path parameter `name` (`id` for `{id}`). Every parameter a route's
    /// template names is there; asking for another is a bug in the host.
    pub fn param(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("route {} has no parameter {name}", self.label))
    }

    /// The path parameter `name`, if the route's template has one.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| *value)
    }
}

/// Path parameters of `template` in `segments`, if the path fits it.
fn fit<'a>(template: &'static str, segments: &[&'a str]) -> Option<Vec<(&'static str, &'a str)>> {
    let parts = path_segments(template);
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.into_iter().zip(segments) {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => params.push((name, *segment)),
            None if part == *segment => {}
            None => return None,
        }
    }
    Some(params)
}

/// Finds the route for a request line: an unknown path is 404; a known path
/// with another method is 405, with `Allow` naming the methods it takes.
/// A GET route answers HEAD too.
pub fn find<'a, E: Copy>(
    routes: &[Route<E>],
    method: &Method,
    path: &'a str,
) -> Result<Matched<'a, E>, Problem> {
    let segments = path_segments(path);
    let mut allowed: Vec<&'static str> = Vec::new();
    for route in routes {
        let (route_method, template) = route.method_and_template();
        let Some(params) = fit(template, &segments) else {
            continue;
        };
        // HEAD is GET without the body (hyper leaves the body out).
        if route_method == method.as_str() || (*method == Method::HEAD && route_method == "GET") {
            return Ok(Matched {
                endpoint: route.endpoint,
                label: route.label,
                params,
            });
        }
        allowed.push(route_method);
        if route_method == "GET" {
            allowed.push("HEAD");
        }
    }
    if allowed.is_empty() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("no such resource: {path}"),
        ));
    }
    allowed.sort_unstable();
    allowed.dedup();
    Err(Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {path}"),
    )
    .with_allow(allowed.join(", ")))
}

/// Where a route table and an OpenAPI document disagree: the routes the
/// document lacks, and the operations it has that no route serves, each as
/// `"METHOD /path"`. Both empty when they agree; each host's tests check it.
pub fn compare_with_openapi<E>(
    routes: &[Route<E>],
    document: &str,
) -> Result<(Vec<String>, Vec<String>), serde_json::Error> {
    let document: serde_json::Value = serde_json::from_str(document)?;
    let mut documented = std::collections::BTreeSet::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, operations) in paths {
            for method in operations.as_object().into_iter().flat_map(|o| o.keys()) {
                if matches!(
                    method.as_str(),
                    "get" | "put" | "post" | "delete" | "patch" | "head"
                ) {
                    documented.insert(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
    }
    let served: std::collections::BTreeSet<String> =
        routes.iter().map(|r| r.label.to_owned()).collect();
    Ok((
        served.difference(&documented).cloned().collect(),
        documented.difference(&served).cloned().collect(),
    ))
}

/// Panics, naming the difference, unless `document` lists exactly the routes
/// of `routes`: the test each host runs against the document it serves.
pub fn assert_documented<E>(routes: &[Route<E>], document: &str) {
    let (undocumented, unserved) =
        compare_with_openapi(routes, document).expect("the OpenAPI document is JSON");
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
}

#[cfg(test)]
mod tests {
    use hyper::{Method, StatusCode};

    use super::{Route, find};

    const ROUTES: &[Route<u8>] = &[
        Route::new("GET /posts", 1),
        Route::new("POST /posts", 2),
        Route::new("DELETE /posts/{id}", 3),
        Route::new("PUT /posts/{id}/comments/{cid}", 4),
    ];

    #[test]
    fn matches_method_and_template() {
        let m = find(ROUTES, &Method::PUT, "/posts/p1/comments/c2").expect("matches");
        assert_eq!(m.endpoint, 4);
        assert_eq!(m.label, "PUT /posts/{id}/comments/{cid}");
        assert_eq!((m.param("id"), m.param("cid")), ("p1", "c2"));
        assert_eq!(
            find(ROUTES, &Method::POST, "/posts")
                .expect("matches")
                .endpoint,
            2
        );
        assert_eq!(
            find(ROUTES, &Method::POST, "//posts/")
                .expect("matches")
                .endpoint,
            2
        );
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405_with_allow() {
        let missing = find(ROUTES, &Method::GET, "/nope").expect_err("404");
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let wrong = find(ROUTES, &Method::PATCH, "/posts").expect_err("405");
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.allow.as_deref(), Some("GET, HEAD, POST"));
        let response = wrong.into_response();
        assert_eq!(response.headers()["allow"], "GET, HEAD, POST");
        assert_eq!(
            find(ROUTES, &Method::HEAD, "/posts")
                .expect("HEAD is GET")
                .endpoint,
            1
        );
    }

    #[test]
    fn finds_what_a_document_lacks_and_what_it_has_too_many_of() {
        let document = r#"{"paths": {"/posts": {"get": {}, "post": {}, "parameters": []},
            "/posts/{id}": {"delete": {}}, "/extra": {"get": {}}}}"#;
        let (undocumented, unserved) = super::compare_with_openapi(ROUTES, document).expect("JSON");
        assert_eq!(undocumented, ["PUT /posts/{id}/comments/{cid}"]);
        assert_eq!(unserved, ["GET /extra"]);
    }
}
