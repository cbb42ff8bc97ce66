use super::mint::{Issuer, jwks};
use super::*;
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn checks() -> Checks {
    Checks {
        issuer: "https://issuer.test".into(),
        audiences: vec!["api".into()],
        clock_skew_s: 60,
    }
}

fn claims() -> Value {
    json!({"iss": "https://issuer.test", "sub": "alice", "aud": ["other", "api"], "exp": NOW + 100})
}

#[test]
fn every_algorithm_verifies_and_a_stranger_key_does_not() {
    for alg in [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ] {
        let issuer = Issuer::new(alg, "k1").unwrap_or_else(|e| panic!("{e}"));
        let set = Jwks::parse(&jwks(&[&issuer])).unwrap_or_default();
        let token = issuer.token(&claims());
        let payload =
            verify(&token, &checks(), &set, NOW).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(payload["sub"], "alice");
        // The same kid from another key: found, but the signature fails.
        let stranger = Issuer::new(alg, "k1").unwrap_or_else(|e| panic!("{e}"));
        let other = Jwks::parse(&jwks(&[&stranger])).unwrap_or_default();
        assert_eq!(
            verify(&token, &checks(), &other, NOW),
            Err(JwtError::VerificationFails),
            "{alg}"
        );
        let elsewhere = Issuer::new(alg, "k2").unwrap_or_else(|e| panic!("{e}"));
        let other = Jwks::parse(&jwks(&[&elsewhere])).unwrap_or_default();
        assert_eq!(
            verify(&token, &checks(), &other, NOW),
            Err(JwtError::NoKeyForKid),
            "{alg}"
        );
    }
}

#[test]
fn envoys_failures_in_envoys_order() {
    let issuer = Issuer::new("ES256", "k").unwrap_or_else(|e| panic!("{e}"));
    let set = Jwks::parse(&jwks(&[&issuer])).unwrap_or_default();
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = claims();
        if let Some(o) = c.as_object_mut() {
            f(o);
        }
        verify(&issuer.token(&c), &checks(), &set, NOW)
    };
    assert_eq!(
        with(&|c| {
            c.insert("iss".into(), json!("https://evil"));
        }),
        Err(JwtError::UnknownIssuer)
    );
    assert_eq!(
        with(&|c| {
            c.insert("exp".into(), json!(NOW - 61));
        }),
        Err(JwtError::Expired)
    );
    assert!(
        with(&|c| {
            c.insert("exp".into(), json!(NOW - 59));
        })
        .is_ok(),
        "60 s of skew"
    );
    assert_eq!(
        with(&|c| {
            c.insert("nbf".into(), json!(NOW + 61));
        }),
        Err(JwtError::NotYetValid)
    );
    assert_eq!(
        with(&|c| {
            c.insert("aud".into(), json!("web"));
        }),
        Err(JwtError::AudienceNotAllowed)
    );
    assert_eq!(JwtError::AudienceNotAllowed.status(), 403);
    assert_eq!(verify("a.b", &checks(), &set, NOW), Err(JwtError::BadForm));
    assert_eq!(
        verify("!!.b.c", &checks(), &set, NOW),
        Err(JwtError::HeaderBase64)
    );
    assert_eq!(
        verify("e30.e30.c2ln", &checks(), &set, NOW),
        Err(JwtError::AlgRequired)
    );
    let none = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
    assert_eq!(
        verify(&none, &checks(), &set, NOW),
        Err(JwtError::AlgUnsupported)
    );
    let token = issuer.token(&claims());
    let (signed, _) = token.rsplit_once('.').unwrap_or_default();
    assert_eq!(
        verify(&format!("{signed}.AAAA"), &checks(), &set, NOW),
        Err(JwtError::VerificationFails)
    );
}

#[test]
fn jwks_documents_envoy_would_not_use() {
    let issuer = Issuer::new("RS256", "k").unwrap_or_else(|e| panic!("{e}"));
    let token = issuer.token(&claims());
    for (bad, why) in [
        ("not json", "Jwks is not valid JSON"),
        ("{}", "[keys] is missing"),
        (
            r#"{"keys": [{"kty": "XYZ", "kid": "k"}]}"#,
            "[kty] is not supported in [keys]",
        ),
        (
            r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAC"}]}"#,
            "RSA key in [keys] is invalid",
        ),
    ] {
        let err = Jwks::parse(bad).err().unwrap_or_default();
        assert!(err.starts_with(why), "{bad}: {err}");
    }
    // Without keys, every token fails.
    assert_eq!(
        verify(&token, &checks(), &Jwks::default(), NOW),
        Err(JwtError::NoValidKey)
    );
    // An unknown key type beside a good key: the good one is used.
    let mixed = format!(r#"{{"keys": [{{"kty": "XYZ"}}, {}]}}"#, issuer.jwk());
    assert!(
        verify(
            &token,
            &checks(),
            &Jwks::parse(&mixed).unwrap_or_default(),
            NOW
        )
        .is_ok()
    );
}
