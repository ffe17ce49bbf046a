//! Query strings and paging as the real services do them (server `pkg/rest.utils/paging.go`):
//! repeated parameters, `page` ≥ 1 and `per_page` 1..=500 (else 400), path-relative `Link`
//! headers with `first`/`prev`/`next`(/`last`), and `X-Total-Count` where the service sends it.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Largest `per_page` the real server accepts.
pub(crate) const PER_PAGE_MAX: usize = 500;

/// A parsed query string, keeping repeated keys in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct QueryPairs(pub(crate) Vec<(String, String)>);

/// A query component as `application/x-www-form-urlencoded` writes it (Go's
/// `url.QueryEscape`): `+` for a space, `%XX` for bytes outside `[A-Za-z0-9*-._]`.
fn percent_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl QueryPairs {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        // Go's `url.ParseQuery`: `&`-separated, `+` is a space, `%XX` a byte (a stray `%` stays).
        let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        Self(pairs)
    }

    /// The last value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable `key`, in order.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `page` and `per_page`, validated like the real services.
    pub(crate) fn paging(&self, default_per_page: usize) -> ApiResult<Paging> {
        let number = |key: &str, default: usize| -> ApiResult<usize> {
            match self.get(key) {
                None | Some("") => Ok(default),
                Some(v) => v
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid {key} value {v:?}"))),
            }
        };
        let page = number("page", 1)?;
        let per_page = number("per_page", default_per_page)?;
        if page < 1 {
            return Err(ApiError::bad_request(
                "invalid page value: must be at least 1",
            ));
        }
        if per_page < 1 {
            return Err(ApiError::bad_request(
                "invalid per_page value: must be at least 1",
            ));
        }
        if per_page > PER_PAGE_MAX {
            return Err(ApiError::bad_request(format!(
                "invalid per_page value: must not exceed {PER_PAGE_MAX}"
            )));
        }
        Ok(Paging { page, per_page })
    }
}

/// Extractor: the request's query string, parsed (never rejects).
impl<S: Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::parse(parts.uri.query()))
    }
}

/// Extractor of a paged list request: the query and its validated `page`/`per_page`
/// (`per_page` defaults to `DEFAULT_PER_PAGE`); 400 as the real services answer otherwise.
pub(crate) struct PagedQuery<const DEFAULT_PER_PAGE: usize = 20> {
    pub(crate) query: QueryPairs,
    pub(crate) paging: Paging,
}

impl<S: Sync, const DEFAULT_PER_PAGE: usize> FromRequestParts<S> for PagedQuery<DEFAULT_PER_PAGE> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = QueryPairs::parse(parts.uri.query());
        let paging = query.paging(DEFAULT_PER_PAGE)?;
        Ok(Self { query, paging })
    }
}

impl<const DEFAULT_PER_PAGE: usize> PagedQuery<DEFAULT_PER_PAGE> {
    /// The requested page of `all` (see [`Paging::respond`]); its links keep the query's other
    /// parameters.
    pub(crate) fn respond(&self, path: &str, all: Vec<Value>, total_header: bool) -> Response {
        self.paging.respond(path, &self.query, all, total_header)
    }
}

/// One page request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Paging {
    pub(crate) page: usize,
    pub(crate) per_page: usize,
}

impl Paging {
    pub(crate) fn offset(&self) -> usize {
        (self.page - 1) * self.per_page
    }

    /// The page's slice of `items` (all items, already filtered and sorted).
    pub(crate) fn slice<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .skip(self.offset())
            .take(self.per_page)
            .cloned()
            .collect()
    }

    /// `Link` header value: path-relative URLs keeping the other query parameters.
    pub(crate) fn link(
        &self,
        path: &str,
        query: &QueryPairs,
        has_next: bool,
        total: Option<usize>,
    ) -> String {
        let others: Vec<String> = query
            .0
            .iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        let url = |page: usize| {
            let mut q = others.clone();
            q.push(format!("page={page}"));
            q.push(format!("per_page={}", self.per_page));
            format!("<{path}?{}>", q.join("&"))
        };
        let mut links = vec![format!("{}; rel=\"first\"", url(1))];
        if self.page > 1 {
            links.push(format!("{}; rel=\"prev\"", url(self.page - 1)));
        }
        if has_next {
            links.push(format!("{}; rel=\"next\"", url(self.page + 1)));
        }
        if let Some(total) = total {
            let last = total.div_ceil(self.per_page).max(1);
            links.push(format!("{}; rel=\"last\"", url(last)));
        }
        links.join(", ")
    }

    /// A JSON page with `Link` and, with `total_header`, `X-Total-Count`.
    pub(crate) fn respond(
        &self,
        path: &str,
        query: &QueryPairs,
        all: Vec<Value>,
        total_header: bool,
    ) -> Response {
        let total = all.len();
        let has_next = self.offset() + self.per_page < total;
        let link = self.link(path, query, has_next, total_header.then_some(total));
        let page = self.slice(&all);
        let mut response = Json(page).into_response();
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.insert("link", v);
        }
        if total_header {
            h.insert("x-total-count", HeaderValue::from(total));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_and_limits() {
        let q = QueryPairs::parse(Some("id=a&id=b%2Fc&status=accepted&per_page=2&page=2"));
        assert_eq!(q.all("id"), vec!["a", "b/c"]);
        let p = q.paging(20).unwrap();
        assert_eq!((p.page, p.per_page, p.offset()), (2, 2, 2));
        assert_eq!(
            p.link("/x", &q, true, Some(5)),
            "</x?id=a&id=b%2Fc&status=accepted&page=1&per_page=2>; rel=\"first\", \
             </x?id=a&id=b%2Fc&status=accepted&page=1&per_page=2>; rel=\"prev\", \
             </x?id=a&id=b%2Fc&status=accepted&page=3&per_page=2>; rel=\"next\", \
             </x?id=a&id=b%2Fc&status=accepted&page=3&per_page=2>; rel=\"last\""
        );
        assert!(QueryPairs::parse(Some("per_page=501")).paging(20).is_err());
        assert!(QueryPairs::parse(Some("per_page=0")).paging(20).is_err());
        assert!(QueryPairs::parse(Some("page=0")).paging(20).is_err());
        assert!(QueryPairs::parse(Some("page=x")).paging(20).is_err());
        assert_eq!(
            QueryPairs::parse(Some("per_page=500"))
                .paging(20)
                .unwrap()
                .per_page,
            500
        );
        assert_eq!(
            QueryPairs::parse(Some("k=a+b%41%&&x")).0,
            [("k".into(), "a bA%".into()), ("x".into(), String::new())]
        );
    }
}
