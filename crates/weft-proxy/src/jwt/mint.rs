//! A JWT issuer of one fresh key: its JWK (for a JWKS) and the tokens it signs. `weft demo`
//! prints one, and tests make tokens of every algorithm the proxy verifies with it.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
#[error("cannot make a {0} key")]
pub struct MintError(String);

enum Secret {
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

pub struct Issuer {
    pub alg: &'static str,
    pub kid: String,
    secret: Secret,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The two INTEGERs of a DER `RSAPublicKey`, leading zeros dropped.
fn rsa_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    fn item(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            let (bytes, after) = rest.split_at_checked(n)?;
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        rest.split_at_checked(len)
    }
    let (seq, _) = item(der, 0x30)?;
    let (n, rest) = item(seq, 0x02)?;
    let (e, _) = item(rest, 0x02)?;
    let trim = |v: &[u8]| {
        let start = v
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(v.len().saturating_sub(1));
        v[start..].to_vec()
    };
    Some((trim(n), trim(e)))
}

impl Issuer {
    /// A new key for `alg` (RS256/384/512, PS256/384/512, ES256/384, EdDSA), named `kid`.
    pub fn new(alg: &'static str, kid: &str) -> Result<Issuer, MintError> {
        let err = || MintError(alg.to_string());
        let rsa = |enc: &'static dyn signature::RsaEncoding| -> Result<(Secret, Value), MintError> {
            let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| err())?;
            let (n, e) = rsa_components(pair.public_key().as_ref()).ok_or_else(err)?;
            let jwk = json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)});
            Ok((Secret::Rsa(pair, enc), jwk))
        };
        let ec = |fixed: &'static signature::EcdsaSigningAlgorithm, crv: &str| {
            let pair = EcdsaKeyPair::generate(fixed).map_err(|_| err())?;
            let point = pair.public_key().as_ref().to_vec();
            let half = point.len().saturating_sub(1) / 2;
            let (x, y) = point.get(1..).ok_or_else(err)?.split_at(half);
            let jwk = json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)});
            Ok::<_, MintError>((Secret::Ec(pair), jwk))
        };
        let (secret, mut jwk) = match alg {
            "RS256" => rsa(&signature::RSA_PKCS1_SHA256)?,
            "RS384" => rsa(&signature::RSA_PKCS1_SHA384)?,
            "RS512" => rsa(&signature::RSA_PKCS1_SHA512)?,
            "PS256" => rsa(&signature::RSA_PSS_SHA256)?,
            "PS384" => rsa(&signature::RSA_PSS_SHA384)?,
            "PS512" => rsa(&signature::RSA_PSS_SHA512)?,
            "ES256" => ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")?,
            "ES384" => ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")?,
            "EdDSA" => {
                let pair = Ed25519KeyPair::generate().map_err(|_| err())?;
                let jwk =
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())});
                (Secret::Ed(pair), jwk)
            }
            _ => return Err(err()),
        };
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), json!(kid));
            o.insert("alg".into(), json!(alg));
        }
        Ok(Issuer {
            alg,
            kid: kid.to_string(),
            secret,
            jwk,
        })
    }

    /// The public key, as a JWKS entry.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A token of `claims`, signed.
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"});
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.secret {
            Secret::Rsa(pair, enc) => {
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(*enc, &rng, signed.as_bytes(), &mut out)
                    .map(|()| out)
                    .unwrap_or_default()
            }
            Secret::Ec(pair) => pair
                .sign(&rng, signed.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            Secret::Ed(pair) => pair.sign(signed.as_bytes()).as_ref().to_vec(),
        };
        format!("{signed}.{}", b64(&sig))
    }
}

/// A JWKS of `issuers`' keys.
pub fn jwks(issuers: &[&Issuer]) -> String {
    json!({"keys": issuers.iter().map(|i| i.jwk().clone()).collect::<Vec<_>>()}).to_string()
}
