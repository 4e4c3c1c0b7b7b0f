//! Filtering, sorting and pagination of lists, as RabbitMQ's API: `name` (a substring
//! of the name), `sort` (a field, dotted for nested ones), `sort_reverse`, and `page` /
//! `page_size`. Without `page` the answer is the plain array; with it, RabbitMQ's page
//! object (`items`, `page`, `page_count`, `page_size`, `item_count`, `filtered_count`,
//! `total_count`).

use super::error::ApiError;
use actix_web::HttpResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cmp::Ordering;

/// Largest `page_size` accepted (RabbitMQ's limit).
const MAX_PAGE_SIZE: usize = 500;

/// The query parameters of a list.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct ListQuery {
    /// The page, from 1; absent = no pagination.
    pub page: Option<usize>,
    /// Items per page (default 100, at most 500).
    pub page_size: Option<usize>,
    /// Keeps items whose name contains this (or matches it, with `use_regex`).
    pub name: Option<String>,
    /// `true`: `name` is a regular expression, matched anywhere in the name, as
    /// RabbitMQ's `use_regex=true` (any case of `true`; anything else is false).
    pub use_regex: Option<String>,
    /// The field to sort by (default: none, the list's own order).
    pub sort: Option<String>,
    /// Reverses the sort.
    #[serde(default)]
    pub sort_reverse: bool,
}

/// Applies `query` to `items` and answers the list or the page.
pub(crate) fn paged(mut items: Vec<Value>, query: &ListQuery) -> Result<HttpResponse, ApiError> {
    let total = items.len();
    if let Some(needle) = &query.name {
        let regex = query
            .use_regex
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case("true"));
        if regex {
            let re = regex::RegexBuilder::new(needle)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    ApiError::bad_request(format!("name is not a regular expression: {e}"))
                })?;
            items.retain(|i| i["name"].as_str().is_some_and(|n| re.is_match(n)));
        } else {
            items.retain(|i| {
                i["name"]
                    .as_str()
                    .is_some_and(|n| n.contains(needle.as_str()))
            });
        }
    }
    if let Some(field) = &query.sort {
        items.sort_by(|a, b| compare(field_of(a, field), field_of(b, field)));
    }
    if query.sort_reverse {
        items.reverse();
    }
    let Some(page) = query.page else {
        return Ok(HttpResponse::Ok().json(items));
    };
    let size = query.page_size.unwrap_or(100);
    if page == 0 || size == 0 || size > MAX_PAGE_SIZE {
        return Err(ApiError::bad_request(format!(
            "page must be at least 1 and page_size between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    let filtered = items.len();
    let page_count = filtered.div_ceil(size);
    if page > page_count.max(1) {
        return Err(ApiError::bad_request(format!(
            "page {page} is past the last page ({page_count})"
        )));
    }
    let items: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "item_count": items.len(),
        "filtered_count": filtered,
        "total_count": total,
        "page": page,
        "page_size": size,
        "page_count": page_count,
        "items": items,
    })))
}

/// `a.b.c` of a JSON object.
fn field_of<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

/// Numbers by value, strings by text, anything else as equal; missing values first.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn items() -> Vec<Value> {
        (0..5)
            .map(|i| json!({"name": format!("q{i}"), "messages": 10 - i}))
            .collect()
    }

    fn answer(query: ListQuery) -> Value {
        let res = paged(items(), &query).expect("a list");
        let bytes = res.into_body().try_into_bytes().expect("a sized body");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn without_page_the_plain_array_is_answered_sorted() {
        let v = answer(ListQuery {
            sort: Some("messages".into()),
            ..Default::default()
        });
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["q4", "q3", "q2", "q1", "q0"]);
    }

    #[test]
    fn a_page_has_rabbitmq_fields() {
        let v = answer(ListQuery {
            page: Some(2),
            page_size: Some(2),
            ..Default::default()
        });
        assert_eq!(v["page_count"], 3);
        assert_eq!(v["total_count"], 5);
        assert_eq!(v["item_count"], 2);
        assert_eq!(v["items"][0]["name"], "q2");
    }

    #[test]
    fn name_filters_and_bad_pages_are_refused() {
        let v = answer(ListQuery {
            name: Some("3".into()),
            ..Default::default()
        });
        assert_eq!(v.as_array().unwrap().len(), 1);
        let past = paged(
            items(),
            &ListQuery {
                page: Some(9),
                ..Default::default()
            },
        );
        assert!(past.is_err());
    }
}
