//! The registry of Mizzen's resource kinds: each kind is named once in [`mesh_kinds!`], and from
//! that one line come its place in [`MeshResource`], how a document of that kind is recognised and
//! parsed, and its CustomResourceDefinition with every served version.

use std::fmt;

use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{CustomResourceExt, Resource};
use serde_json::Value;

use crate::{
    Normalize,
    validate::{Code, Problem, validate_spec},
};

/// Versions served for Istio's groups; the first is the storage version. All share one schema.
pub const ISTIO_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
/// Versions served for Mizzen's own groups.
pub const MIZZEN_VERSIONS: &[&str] = &["v1alpha1"];

/// Identifies one object in messages: `VirtualService/default/reviews` (`Kind/name` when it has
/// no namespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why a document of a known kind could not be read as that kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFailure {
    pub kind: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub problem: Problem,
}

/// The served CRD for `K`: the derived schema, served under every version of `versions`, the
/// first of them stored.
fn served_crd<K: CustomResourceExt>(versions: &[&str]) -> CustomResourceDefinition {
    let mut crd = K::crd();
    let derived = crd.spec.versions.remove(0);
    crd.spec.versions = versions
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut v = derived.clone();
            v.name = (*name).to_string();
            v.served = true;
            v.storage = i == 0;
            v
        })
        .collect();
    crd
}

/// Turns a serde error from typed parsing into a problem at the field it names.
fn parse_problem(err: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = err.into_inner().to_string();
    let code = if message.starts_with("unknown field") {
        Code::UnknownField
    } else if message.starts_with("unknown variant") {
        Code::UnknownEnumValue
    } else if message.contains("duration") {
        Code::InvalidDuration
    } else if message.starts_with("missing field") {
        Code::MissingField
    } else {
        Code::SchemaError
    };
    Problem::error(code, path, message)
}

fn str_field<'a>(value: &'a Value, ptr: &str) -> Option<&'a str> {
    value.pointer(ptr).and_then(Value::as_str)
}

macro_rules! mesh_kinds {
    ($($variant:ident($ty:ty) => $versions:expr;)*) => {
        /// Any resource of a kind Mizzen defines or serves, typed.
        #[derive(Clone, Debug, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum MeshResource {
            $($variant($ty),)*
        }

        impl MeshResource {
            /// `(group, kind, served versions)` of every registered kind.
            pub fn kinds() -> Vec<(String, String, &'static [&'static str])> {
                vec![$((<$ty as Resource>::group(&()).into_owned(), <$ty as Resource>::kind(&()).into_owned(), $versions),)*]
            }

            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($variant),)*
                }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Self::$variant(r) => r.meta(),)*
                }
            }

            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Self::$variant(r) => r.meta_mut(),)*
                }
            }

            /// Problems of the spec taken alone (no references to other objects).
            pub fn validate(&self) -> Vec<Problem> {
                match self {
                    $(Self::$variant(r) => validate_spec(&r.spec),)*
                }
            }

            /// Rewrites older spellings into their current form.
            pub fn normalize(&mut self) {
                match self {
                    $(Self::$variant(r) => r.spec.normalize(),)*
                }
            }

            /// The object as JSON, with the storage `apiVersion`.
            pub fn to_value(&self) -> Value {
                let v: serde_json::Result<Value> = match self {
                    $(Self::$variant(r) => serde_json::to_value(r),)*
                };
                v.expect("mesh resources always serialise")
            }

            /// Reads a document. `Ok(None)` when it is not a kind of ours; `Err` names the field
            /// that does not fit when it is one of ours but malformed.
            pub fn from_value(value: &Value) -> Result<Option<Self>, Box<ParseFailure>> {
                let api_version = str_field(value, "/apiVersion").unwrap_or_default();
                let kind = str_field(value, "/kind").unwrap_or_default();
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
                let failure = |problem| Box::new(ParseFailure {
                    kind: kind.to_string(),
                    name: str_field(value, "/metadata/name").map(str::to_string),
                    namespace: str_field(value, "/metadata/namespace").map(str::to_string),
                    problem,
                });
                $(
                    if group == <$ty as Resource>::group(&()) && kind == <$ty as Resource>::kind(&()) {
                        let versions: &[&str] = $versions;
                        if !versions.contains(&version) {
                            return Err(failure(Problem::error(
                                Code::SchemaError,
                                "apiVersion",
                                format!("{group}/{version} is not served for {kind} (served versions: {})", versions.join(", ")),
                            )));
                        }
                        return serde_path_to_error::deserialize::<_, $ty>(value)
                            .map(|r| Some(Self::$variant(r)))
                            .map_err(|e| failure(parse_problem(e)));
                    }
                )*
                Ok(None)
            }
        }

        /// Every CustomResourceDefinition Mizzen installs, each serving all its versions.
        pub fn crds() -> Vec<CustomResourceDefinition> {
            vec![$(served_crd::<$ty>($versions),)*]
        }
    };
}

mesh_kinds! {
    VirtualService(crate::networking::VirtualService) => ISTIO_VERSIONS;
    DestinationRule(crate::networking::DestinationRule) => ISTIO_VERSIONS;
    Gateway(crate::networking::Gateway) => ISTIO_VERSIONS;
    ServiceEntry(crate::networking::ServiceEntry) => ISTIO_VERSIONS;
    WorkloadEntry(crate::networking::WorkloadEntry) => ISTIO_VERSIONS;
    Sidecar(crate::networking::Sidecar) => ISTIO_VERSIONS;
    PeerAuthentication(crate::security::PeerAuthentication) => ISTIO_VERSIONS;
    AuthorizationPolicy(crate::security::AuthorizationPolicy) => ISTIO_VERSIONS;
    RequestAuthentication(crate::security::RequestAuthentication) => ISTIO_VERSIONS;
    Canary(crate::rollouts::Canary) => MIZZEN_VERSIONS;
}

impl MeshResource {
    pub fn object_ref(&self, default_namespace: &str) -> ObjectRef {
        let meta = self.meta();
        ObjectRef {
            kind: self.kind().to_string(),
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// The CRDs as one YAML stream (`---` between documents), as written to `crds/` and `manifests/`.
pub fn crds_yaml(crds: &[CustomResourceDefinition]) -> String {
    crds.iter().map(to_yaml).collect::<Vec<_>>().join("---\n")
}

/// One object as YAML.
pub fn to_yaml<T: serde::Serialize>(obj: &T) -> String {
    serde_saphyr::to_string(obj).expect("objects of ours always serialise to YAML")
}

/// The file name `crdgen` gives a CRD: `virtualservices.networking.istio.io.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// The files `crdgen` writes into `crds/`: one per CRD, named after it.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .iter()
        .map(|crd| {
            let header = "# Generated by `cargo run -p mizzen-crds --bin crdgen` from the Rust types in crds/src; do not edit.\n";
            (crd_file_name(crd), format!("{header}{}", to_yaml(crd)))
        })
        .collect()
}
