//! A JSON Web Key Set as Envoy reads one: keys of a type it does not know (or that are broken)
//! are left out; a set with no usable key is refused, saying why (Envoy refuses such an inline
//! set; a fetched one makes every token fail). A key is tried for a token when its `kid` (if
//! both have one), its `alg` (if it has one) and its type fit the token's.

use super::JwtError;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Option<String>,
    family: Family,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec256,
    Ec384,
    Ed25519,
    Hmac,
}

#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<Key>,
}

/// The algorithms of `alg` that can be verified (Envoy's less ES512).
pub(super) fn algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        _ => return None,
    })
}

fn family_of(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    Some(match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 => Family::Ec256,
        ES384 => Family::Ec384,
        EdDSA => Family::Ed25519,
        HS256 | HS384 | HS512 => Family::Hmac,
        _ => return None,
    })
}

impl Jwks {
    /// The usable keys of `text`; why there are none, in Envoy's words where it has some.
    pub fn parse(text: &str) -> Result<Jwks, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("Jwks is not valid JSON: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("[keys] is missing or is not an array")?;
        let mut keys = Vec::new();
        let mut last = "[keys] is empty".to_string();
        for k in list {
            match key(k) {
                Ok(k) => keys.push(k),
                Err(why) => last = why,
            }
        }
        if keys.is_empty() {
            return Err(last);
        }
        Ok(Jwks { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `signature` of `signed` with the first key that fits and verifies it.
    pub(super) fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        signed: &[u8],
        signature: &str,
    ) -> Result<(), JwtError> {
        if self.keys.is_empty() {
            return Err(JwtError::NoValidKey);
        }
        let alg_name = format!("{alg:?}");
        let family = family_of(alg).ok_or(JwtError::AlgUnsupported)?;
        let mut fitted = false;
        for k in &self.keys {
            if kid.is_some() && k.kid.is_some() && k.kid.as_deref() != kid {
                continue;
            }
            if k.alg.as_deref().is_some_and(|a| a != alg_name) || k.family != family {
                continue;
            }
            fitted = true;
            if jsonwebtoken::crypto::verify(signature, signed, &k.key, alg).unwrap_or(false) {
                return Ok(());
            }
        }
        Err(if fitted {
            JwtError::VerificationFails
        } else {
            JwtError::NoKeyForKid
        })
    }
}

/// One JWK, or why Envoy would not take it.
fn key(v: &Value) -> Result<Key, String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let need = |k: &str| s(k).ok_or_else(|| format!("[{k}] is missing in [keys]"));
    let bad = |what: &str| format!("{what} key in [keys] is invalid");
    let kty = need("kty")?;
    let (family, key) = match kty {
        "RSA" => {
            // Envoy takes only the public exponents 3 and 65537.
            if !matches!(need("e")?, "AQAB" | "Aw") {
                return Err(bad("RSA"));
            }
            let k =
                DecodingKey::from_rsa_components(need("n")?, need("e")?).map_err(|_| bad("RSA"))?;
            (Family::Rsa, k)
        }
        "EC" => {
            let family = match (s("crv"), s("alg")) {
                (Some("P-256"), _) | (None, None | Some("ES256")) => Family::Ec256,
                (Some("P-384"), _) | (None, Some("ES384")) => Family::Ec384,
                _ => return Err("[crv] is not supported in [keys]".into()),
            };
            let k =
                DecodingKey::from_ec_components(need("x")?, need("y")?).map_err(|_| bad("EC"))?;
            (family, k)
        }
        "OKP" if s("crv") == Some("Ed25519") => (
            Family::Ed25519,
            DecodingKey::from_ed_components(need("x")?).map_err(|_| bad("OKP"))?,
        ),
        "OKP" => return Err("[crv] is not supported in [keys]".into()),
        "oct" => {
            use base64::Engine as _;
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(need("k")?.trim_end_matches('='))
                .map_err(|_| bad("oct"))?;
            (Family::Hmac, DecodingKey::from_secret(&secret))
        }
        _ => return Err("[kty] is not supported in [keys]".into()),
    };
    Ok(Key {
        kid: s("kid").map(str::to_string),
        alg: s("alg").map(str::to_string),
        family,
        key,
    })
}
