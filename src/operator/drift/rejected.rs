//! Declarations the API server refused when a revert applied them.
//!
//! A revert the server answers with 400 or 422 is refused for what Git
//! declares (`protocol: tcp`, a negative replica count, a value its schema
//! types otherwise): trying again cannot help. The object is reported once,
//! as a source problem (`SourceValid=False`, reason `DeclarationRejected`),
//! and not reverted again until the sources change (a new parse).

use crate::operator::gate::RevertError;

/// The longest server message kept: it ends up in status and an Event.
const MAX_MESSAGE: usize = 400;

/// The server's reason when a revert failed because it refused the declared
/// object itself; None for every other failure (conflicts, outages,
/// permissions), which are retried. A Secret's reason is not repeated: it
/// could quote a value.
pub(super) fn refused_declaration(error: &RevertError, kind: &str) -> Option<String> {
    let RevertError::Apply(kube::Error::Api(status)) = error else { return None };
    // Server-side apply reports a value its schema cannot hold as a 500 on
    // some releases ("failed to create typed patch object").
    let typed = status.code == 500 && status.message.contains("failed to create typed patch object");
    if !(status.code == 400 || status.code == 422 || typed) {
        return None;
    }
    if kind == "Secret" {
        return Some(format!("the API server refused it ({})", status.code));
    }
    let mut message = status.message.clone();
    if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(at);
        message.push_str("...");
    }
    Some(format!("the API server refused it ({}): {message}", status.code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> RevertError {
        let status: kube::core::Status =
            serde_json::from_value(serde_json::json!({"code": code, "message": message})).unwrap();
        RevertError::Apply(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn only_a_refusal_of_the_declared_object_counts() {
        let invalid = api_error(422, "Service \"web\" is invalid: spec.ports[0].protocol: Unsupported value: \"tcp\"");
        assert_eq!(
            refused_declaration(&invalid, "Service").as_deref(),
            Some(
                "the API server refused it (422): Service \"web\" is invalid: spec.ports[0].protocol: Unsupported value: \"tcp\""
            )
        );
        let typed = api_error(500, "failed to create typed patch object: .spec.replicas: expected numeric");
        assert!(refused_declaration(&typed, "Deployment").is_some());
        for retried in [api_error(409, "conflict"), api_error(403, "forbidden"), api_error(500, "etcd timeout")] {
            assert_eq!(refused_declaration(&retried, "Service"), None);
        }
        assert_eq!(refused_declaration(&RevertError::Contended(5), "Service"), None);
        // A Secret's reason may quote its data.
        let secret = api_error(422, "Secret \"s\" is invalid: data[token]: Invalid value: \"hunter2\"");
        assert_eq!(refused_declaration(&secret, "Secret").as_deref(), Some("the API server refused it (422)"));
        let long = api_error(400, &"x".repeat(5000));
        assert!(refused_declaration(&long, "ConfigMap").unwrap().len() < 500);
    }
}
