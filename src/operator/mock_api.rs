//! A mocked API server for unit tests of the shell (kube's `tower-test`,
//! as kube-rs tests its own client): a test answers the requests it
//! expects, in order, and asserts on what the shell sent. For paths that
//! would otherwise need a whole control plane to reach (a 403, a conflict,
//! the order of two writes).

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

/// The API server's side of a mocked client.
pub struct MockApi(Handle<Request<Body>, Response<Body>>);

/// One request the shell sent.
#[derive(Debug)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

/// A client whose every request the returned [`MockApi`] answers.
pub fn client() -> (kube::Client, MockApi) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), MockApi(handle))
}

impl MockApi {
    /// Takes the next request and answers it with `status` and `body`.
    pub async fn answer(&mut self, status: u16, body: Value) -> Seen {
        self.answer_with(status, |_| body).await
    }

    /// Takes the next request and answers it with `status` and what `body`
    /// makes of it (`|seen| seen.body.clone()` echoes a create).
    pub async fn answer_with(&mut self, status: u16, body: impl FnOnce(&Seen) -> Value) -> Seen {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await;
        let (request, send) = next.expect("a request within 5 s").expect("the client is gone");
        let (parts, received) = request.into_parts();
        let bytes = received.collect_bytes().await.expect("a readable body");
        let seen = Seen {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&body(&seen)).expect("JSON")))
            .expect("a response");
        send.send_response(response);
        seen
    }

    /// No request comes (the shell sent nothing more, or dropped its client).
    pub async fn is_quiet(&mut self) -> bool {
        matches!(tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await, Err(_) | Ok(None))
    }
}

/// The API server's refusal.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}
