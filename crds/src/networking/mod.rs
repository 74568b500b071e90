//! `networking.istio.io`: traffic routing and service registry resources.
