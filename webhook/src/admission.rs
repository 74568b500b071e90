//! AdmissionReviews in, AdmissionReviews out: parse the body, run the pure decision
//! ([`crate::inject::inject`] or the shared validation of `mizzen-crds`), answer. Nothing here
//! does I/O, so every answer the server gives can be tested without it.
//!
//! The objects under review are kept as raw JSON (`request.object`, `request.oldObject`): the
//! envelope is read with kube's types, the pod is never forced through a typed struct.

use std::collections::HashMap;

use k8s_openapi::ByteString;
use kube::core::{
    DynamicObject, Status,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    response::{StatusCause, StatusDetails},
};
use mizzen_crds::{resource::MeshResource, validate::Severity};
use serde::Serialize;
use serde_json::Value;

use crate::inject::{self, InjectSettings, Outcome};

/// The only AdmissionReview version Mizzen's webhook configurations ask for.
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// A body that is not an AdmissionReview this server can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("the body is not an AdmissionReview: {0}")]
    NotAReview(String),
    #[error("malformed AdmissionReview at {path}: {message}")]
    Malformed { path: String, message: String },
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// One request under review, with its objects as raw JSON.
#[derive(Clone, Debug)]
pub struct Review {
    pub request: AdmissionRequest<DynamicObject>,
    pub object: Option<Value>,
    pub old_object: Option<Value>,
}

/// Reads an `admission.k8s.io/v1` AdmissionReview.
pub fn parse(body: &[u8]) -> Result<Review, ReviewError> {
    let mut value: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    let top = value
        .as_object_mut()
        .ok_or_else(|| ReviewError::NotAReview("expected a JSON object".into()))?;
    let field = |name: &str| top.get(name).and_then(Value::as_str).unwrap_or_default();
    if field("kind") != KIND || field("apiVersion") != API_VERSION {
        return Err(ReviewError::NotAReview(format!(
            "expected apiVersion {API_VERSION} and kind {KIND}, got {:?} and {:?}",
            field("apiVersion"),
            field("kind")
        )));
    }
    let mut take = |name: &str| {
        top.get_mut("request")
            .and_then(Value::as_object_mut)
            .and_then(|r| r.remove(name))
            .filter(|v| !v.is_null())
    };
    let object = take("object");
    let old_object = take("oldObject");
    for (name, obj) in [("object", &object), ("oldObject", &old_object)] {
        if obj.as_ref().is_some_and(|o| !o.is_object()) {
            return Err(ReviewError::Malformed {
                path: format!("request.{name}"),
                message: "expected an object".into(),
            });
        }
    }
    let review: AdmissionReview<DynamicObject> =
        serde_path_to_error::deserialize(value).map_err(|e| ReviewError::Malformed {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;
    Ok(Review {
        request,
        object,
        old_object,
    })
}

/// How an admission ended, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A pod got the sidecar.
    Injected,
    /// A pod (or other object) passed the injector unchanged.
    Skipped,
    /// Validation found nothing to refuse.
    Allowed,
    /// Validation refused the object.
    Denied,
    /// The request could not be answered (missing object, impossible injection).
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Skipped => "skipped",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

pub fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The answer to one review.
#[derive(Debug)]
pub struct Decision {
    pub response: AdmissionResponse,
    pub verdict: Verdict,
    /// Why, in a few words (logged).
    pub note: String,
}

impl Decision {
    fn new(response: AdmissionResponse, verdict: Verdict, note: impl Into<String>) -> Self {
        Self {
            response,
            verdict,
            note: note.into(),
        }
    }

    /// The AdmissionReview to send back, as kube's types hold it.
    pub fn into_review(self) -> AdmissionReview<DynamicObject> {
        self.response.into_review()
    }

    /// The AdmissionReview to send back, as JSON. The patch is written as a base64 string, the
    /// way Kubernetes encodes `[]byte` (kube's types write an array of numbers, which the API
    /// server also reads, at three times the size and many times the cost).
    pub fn to_json(&self) -> Vec<u8> {
        let r = &self.response;
        let out = ReviewOut {
            api_version: API_VERSION,
            kind: KIND,
            response: ResponseOut {
                uid: &r.uid,
                allowed: r.allowed,
                status: &r.result,
                patch: r.patch.as_ref().map(|p| ByteString(p.clone())),
                patch_type: r.patch.as_ref().map(|_| "JSONPatch"),
                audit_annotations: &r.audit_annotations,
                warnings: r.warnings.as_ref(),
            },
        };
        serde_json::to_vec(&out).expect("responses always serialise")
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<ByteString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Vec<String>>,
}

fn refuse(req: &AdmissionRequest<DynamicObject>, status: Status) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    response.allowed = false;
    response.result = status;
    response
}

/// The JSON patch from `left` to `right`: exactly what `json_patch::diff` gives, without walking
/// the subtrees the two share (a pod's `managedFields`, its untouched containers), which is most
/// of the work of a plain `json_patch::diff` on a pod.
pub fn diff(left: &Value, right: &Value) -> json_patch::Patch {
    let mut patch = json_patch::Patch::default();
    diff_into(
        left,
        right,
        &mut json_patch::jsonptr::PointerBuf::new(),
        &mut patch,
    );
    patch
}

fn diff_into(
    left: &Value,
    right: &Value,
    path: &mut json_patch::jsonptr::PointerBuf,
    patch: &mut json_patch::Patch,
) {
    use json_patch::{AddOperation, PatchOperation, RemoveOperation};
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            for (key, rv) in r {
                match l.get(key) {
                    Some(lv) if lv == rv => {}
                    Some(lv) => {
                        path.push_back(key);
                        diff_into(lv, rv, path, patch);
                        path.pop_back();
                    }
                    None => {
                        path.push_back(key);
                        patch.0.push(PatchOperation::Add(AddOperation {
                            path: path.clone(),
                            value: rv.clone(),
                        }));
                        path.pop_back();
                    }
                }
            }
            for key in l.keys().filter(|k| !r.contains_key(*k)) {
                path.push_back(key);
                patch.0.push(PatchOperation::Remove(RemoveOperation {
                    path: path.clone(),
                }));
                path.pop_back();
            }
        }
        _ if left == right => {}
        _ => {
            for mut op in json_patch::diff(left, right).0 {
                let at = match &mut op {
                    PatchOperation::Add(o) => &mut o.path,
                    PatchOperation::Remove(o) => &mut o.path,
                    PatchOperation::Replace(o) => &mut o.path,
                    PatchOperation::Move(o) => &mut o.path,
                    PatchOperation::Copy(o) => &mut o.path,
                    PatchOperation::Test(o) => &mut o.path,
                };
                *at = path.concat(at);
                patch.0.push(op);
            }
        }
    }
}

/// The mutating webhook: injects pods on CREATE and lets everything else through unchanged.
pub fn inject(review: &Review, settings: &InjectSettings) -> Decision {
    let req = &review.request;
    let allow = AdmissionResponse::from(req);
    if !req.kind.group.is_empty() || req.kind.kind != "Pod" || req.sub_resource.is_some() {
        return Decision::new(allow, Verdict::Skipped, "not a pod");
    }
    if req.operation != Operation::Create {
        return Decision::new(allow, Verdict::Skipped, "not a CREATE");
    }
    let Some(pod) = &review.object else {
        let status = Status::failure(
            "request.object: a pod CREATE must carry the pod",
            "BadRequest",
        )
        .with_code(400);
        return Decision::new(refuse(req, status), Verdict::Error, "no object");
    };
    let namespace = req
        .namespace
        .as_deref()
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default");
    match inject::inject(pod, namespace, settings) {
        Ok(done) => match done.outcome {
            Outcome::Skipped(skip) => Decision::new(allow, Verdict::Skipped, skip.to_string()),
            Outcome::Injected => {
                let patch = diff(pod, &done.pod);
                match allow.with_patch(patch) {
                    Ok(response) => Decision::new(response, Verdict::Injected, "injected"),
                    Err(e) => {
                        let status =
                            Status::failure(&e.to_string(), "InternalError").with_code(500);
                        Decision::new(refuse(req, status), Verdict::Error, e.to_string())
                    }
                }
            }
        },
        Err(e) => {
            let message = format!("mizzen sidecar injection: {e}");
            let status = Status::failure(&message, "BadRequest").with_code(400);
            Decision::new(refuse(req, status), Verdict::Error, message)
        }
    }
}

/// The validating webhook: refuses Istio and Mizzen resources with errors, naming every problem
/// with its field path; warnings are passed on as admission warnings.
pub fn validate(review: &Review) -> Decision {
    let req = &review.request;
    let allow = AdmissionResponse::from(req);
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return Decision::new(allow, Verdict::Allowed, "delete or connect");
    }
    if req.sub_resource.is_some() {
        return Decision::new(allow, Verdict::Allowed, "subresource");
    }
    let Some(object) = &review.object else {
        let status = Status::failure(
            "request.object: a CREATE or UPDATE must carry the object",
            "BadRequest",
        )
        .with_code(400);
        return Decision::new(refuse(req, status), Verdict::Error, "no object");
    };
    let problems = match MeshResource::from_value(object) {
        Ok(None) => return Decision::new(allow, Verdict::Allowed, "not a mesh resource"),
        Ok(Some(resource)) => resource.validate(),
        Err(failure) => vec![failure.problem],
    };
    let (errors, warnings): (Vec<_>, Vec<_>) = problems
        .into_iter()
        .partition(|p| p.severity == Severity::Error);
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    let mut response = if errors.is_empty() {
        allow
    } else {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let causes = errors
            .iter()
            .map(|p| StatusCause {
                reason: "FieldValueInvalid".into(),
                message: p.message.clone(),
                field: p.path.clone(),
            })
            .collect();
        let details = StatusDetails {
            name: req.name.clone(),
            group: req.kind.group.clone(),
            kind: req.kind.kind.clone(),
            uid: String::new(),
            causes,
            retry_after_seconds: 0,
        };
        let status = Status::failure(&message, "Invalid")
            .with_code(422)
            .with_details(details);
        refuse(req, status)
    };
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    if response.allowed {
        Decision::new(response, Verdict::Allowed, "valid")
    } else {
        let note = response.result.message.clone();
        Decision::new(response, Verdict::Denied, note)
    }
}

#[cfg(test)]
mod tests;
