//! `security.istio.io`: mutual TLS, authorization and request authentication.
