//! Answers the gateway has already rendered as JSON, each kept with the version of the
//! data it was made from. A route asks the owning service for that version only
//! (`if_version`); while the service says nothing changed, the kept bytes are the answer,
//! and the service sends no data and the gateway decodes and renders none.

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use comb_kit::versions::KeptAnswers;

/// Answers kept; past this the cache starts over, so odd queries cannot grow it unbounded.
const MAX_ANSWERS: usize = 1024;

/// A rendered answer and the version of the data it shows.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub version: u64,
    pub body: Bytes,
}

impl Rendered {
    /// The kept JSON as a response.
    pub fn into_json(self) -> Response {
        json(self.body)
    }
}

/// A JSON body as a response.
pub fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Rendered answers by what was asked.
#[derive(Debug)]
pub struct RenderedCache {
    answers: KeptAnswers<String, Bytes>,
}

impl Default for RenderedCache {
    fn default() -> Self {
        Self {
            answers: KeptAnswers::new(MAX_ANSWERS),
        }
    }
}

impl RenderedCache {
    /// The answer kept for `key`, if any.
    pub fn get(&self, key: &str) -> Option<Rendered> {
        self.answers
            .get(key)
            .map(|(version, body)| Rendered { version, body })
    }

    /// Keeps an answer rendered from data at `version`.
    pub fn keep(&self, key: String, version: u64, body: Bytes) {
        self.answers.keep(key, version, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_by_key_and_bounded() {
        let cache = RenderedCache::default();
        assert!(cache.get("a").is_none());
        cache.keep("a".into(), 7, Bytes::from_static(b"[]"));
        let kept = cache.get("a").expect("kept");
        assert_eq!((kept.version, kept.body.as_ref()), (7, b"[]".as_slice()));
        for n in 0..MAX_ANSWERS + 5 {
            cache.keep(format!("k{n}"), 1, Bytes::new());
        }
        assert!(cache.answers.len() <= MAX_ANSWERS);
    }
}
