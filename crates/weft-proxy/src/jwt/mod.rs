//! JWT verification as Envoy's `jwt_authn` does it (`source/common/jwt`): the token's form,
//! then its issuer, its time window (60 s of clock skew), its audiences, and last its
//! signature against the provider's JWKS. Each failure is one of Envoy's statuses, with
//! Envoy's words; only a disallowed audience is a 403.

mod jwks;
pub mod mint;

pub use jwks::Jwks;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Envoy's JWT statuses that reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Missing,
    Expired,
    NotYetValid,
    BadForm,
    HeaderBase64,
    HeaderJson,
    AlgRequired,
    AlgUnsupported,
    PayloadBase64,
    PayloadJson,
    SignatureBase64,
    UnknownIssuer,
    AudienceNotAllowed,
    VerificationFails,
    NoKeyForKid,
    NoValidKey,
    RemoteFetchFailed,
}

impl JwtError {
    pub fn message(self) -> &'static str {
        use JwtError::*;
        match self {
            Missing => "Jwt is missing",
            Expired => "Jwt is expired",
            NotYetValid => "Jwt not yet valid",
            BadForm => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            HeaderBase64 => "Jwt header is an invalid Base64url encoded",
            HeaderJson => "Jwt header is an invalid JSON",
            AlgRequired => "Jwt header [alg] field is required and must be a string",
            AlgUnsupported => "Jwt header [alg] is not supported",
            PayloadBase64 => "Jwt payload is an invalid Base64url encoded",
            PayloadJson => "Jwt payload is an invalid JSON",
            SignatureBase64 => "Jwt signature is an invalid Base64url encoded",
            UnknownIssuer => "Jwt issuer is not configured",
            AudienceNotAllowed => "Audiences in Jwt are not allowed",
            VerificationFails => "Jwt verification fails",
            NoKeyForKid => "Jwks doesn't have key to match kid or alg from Jwt",
            NoValidKey => "Jwks doesn't have any valid public key",
            RemoteFetchFailed => "Jwks remote fetch is failed",
        }
    }

    /// `%RESPONSE_CODE_DETAILS%`: `jwt_authn_access_denied{MESSAGE}`, spaces made `_`.
    pub fn details(self) -> &'static str {
        use JwtError::*;
        match self {
            Missing => "jwt_authn_access_denied{Jwt_is_missing}",
            Expired => "jwt_authn_access_denied{Jwt_is_expired}",
            NotYetValid => "jwt_authn_access_denied{Jwt_not_yet_valid}",
            BadForm => {
                "jwt_authn_access_denied{Jwt_is_not_in_the_form_of_Header.Payload.Signature_with_two_dots_and_3_sections}"
            }
            HeaderBase64 => "jwt_authn_access_denied{Jwt_header_is_an_invalid_Base64url_encoded}",
            HeaderJson => "jwt_authn_access_denied{Jwt_header_is_an_invalid_JSON}",
            AlgRequired => {
                "jwt_authn_access_denied{Jwt_header_[alg]_field_is_required_and_must_be_a_string}"
            }
            AlgUnsupported => "jwt_authn_access_denied{Jwt_header_[alg]_is_not_supported}",
            PayloadBase64 => "jwt_authn_access_denied{Jwt_payload_is_an_invalid_Base64url_encoded}",
            PayloadJson => "jwt_authn_access_denied{Jwt_payload_is_an_invalid_JSON}",
            SignatureBase64 => {
                "jwt_authn_access_denied{Jwt_signature_is_an_invalid_Base64url_encoded}"
            }
            UnknownIssuer => "jwt_authn_access_denied{Jwt_issuer_is_not_configured}",
            AudienceNotAllowed => "jwt_authn_access_denied{Audiences_in_Jwt_are_not_allowed}",
            VerificationFails => "jwt_authn_access_denied{Jwt_verification_fails}",
            NoKeyForKid => {
                "jwt_authn_access_denied{Jwks_doesn't_have_key_to_match_kid_or_alg_from_Jwt}"
            }
            NoValidKey => "jwt_authn_access_denied{Jwks_doesn't_have_any_valid_public_key}",
            RemoteFetchFailed => "jwt_authn_access_denied{Jwks_remote_fetch_is_failed}",
        }
    }

    pub fn status(self) -> http::StatusCode {
        if self == JwtError::AudienceNotAllowed {
            http::StatusCode::FORBIDDEN
        } else {
            http::StatusCode::UNAUTHORIZED
        }
    }
}

/// What a provider checks a token against.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// Empty: any issuer.
    pub issuer: String,
    /// Empty: any audience.
    pub audiences: Vec<String>,
    pub clock_skew_s: u64,
}

/// A token that passed: its payload.
pub type Payload = Map<String, Value>;

/// Verifies `token` as a provider with `checks` and `jwks` does, at `now` (Unix seconds).
pub fn verify(token: &str, checks: &Checks, jwks: &Jwks, now: u64) -> Result<Payload, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadForm);
    };
    let header = URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .map_err(|_| JwtError::HeaderBase64)?;
    let header: Value = serde_json::from_slice(&header).map_err(|_| JwtError::HeaderJson)?;
    let header = header.as_object().ok_or(JwtError::HeaderJson)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::AlgRequired)?;
    let alg = jwks::algorithm(alg).ok_or(JwtError::AlgUnsupported)?;
    let kid = header.get("kid").and_then(Value::as_str);
    let payload = URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .map_err(|_| JwtError::PayloadBase64)?;
    let payload: Value = serde_json::from_slice(&payload).map_err(|_| JwtError::PayloadJson)?;
    let Value::Object(payload) = payload else {
        return Err(JwtError::PayloadJson);
    };
    if URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).is_err() {
        return Err(JwtError::SignatureBase64);
    }
    let iss = payload.get("iss").and_then(Value::as_str).unwrap_or("");
    if !checks.issuer.is_empty() && iss != checks.issuer {
        return Err(JwtError::UnknownIssuer);
    }
    let time = |k: &str| payload.get(k).and_then(Value::as_u64).unwrap_or(0);
    let skew = checks.clock_skew_s;
    let (nbf, exp) = (time("nbf"), time("exp"));
    if nbf > 0 && now.saturating_add(skew) < nbf {
        return Err(JwtError::NotYetValid);
    }
    if exp > 0 && now > exp.saturating_add(skew) {
        return Err(JwtError::Expired);
    }
    if !checks.audiences.is_empty() {
        let audiences: Vec<&str> = match payload.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(l)) => l.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|a| checks.audiences.iter().any(|c| c == a))
        {
            return Err(JwtError::AudienceNotAllowed);
        }
    }
    let signed = &token[..h.len() + 1 + p.len()];
    jwks.verify(kid, alg, signed.as_bytes(), s)?;
    Ok(payload)
}

#[cfg(test)]
mod tests;
