//! SDS secrets that come on the ADS stream with the rest of the config, as istiod sends a proxy
//! the `credentialName` certificates of its Gateway servers and DestinationRules
//! (`kubernetes://NAME`, `kubernetes://NAME-cacert`).
//! The xDS client replaces the whole set when an update is accepted; TLS contexts that name a
//! secret read it here at each handshake, so a renewed certificate takes effect on the next
//! connection, with no listener change.

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// One secret: a certificate with its key (and its URI SANs, XFCC's `By`), or trusted roots.
#[derive(Debug)]
pub enum AdsSecret {
    Certificate {
        certified: Arc<CertifiedKey>,
        uris: Vec<String>,
    },
    Roots(Arc<RootCertStore>),
}

#[derive(Debug, Default)]
pub struct AdsSecrets {
    by_name: ArcSwap<HashMap<String, Arc<AdsSecret>>>,
}

static STORE: OnceLock<AdsSecrets> = OnceLock::new();

/// The process's secrets from ADS.
pub fn ads_secrets() -> &'static AdsSecrets {
    STORE.get_or_init(AdsSecrets::default)
}

impl AdsSecrets {
    pub fn set(&self, secrets: HashMap<String, Arc<AdsSecret>>) {
        self.by_name.store(Arc::new(secrets));
    }

    pub fn get(&self, name: &str) -> Option<Arc<AdsSecret>> {
        self.by_name.load().get(name).cloned()
    }

    pub fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        match self.get(name)?.as_ref() {
            AdsSecret::Certificate { certified, .. } => Some(certified.clone()),
            AdsSecret::Roots(_) => None,
        }
    }

    pub fn roots(&self, name: &str) -> Option<Arc<RootCertStore>> {
        match self.get(name)?.as_ref() {
            AdsSecret::Roots(r) => Some(r.clone()),
            AdsSecret::Certificate { .. } => None,
        }
    }

    pub fn uris(&self, name: &str) -> Vec<String> {
        match self.get(name).as_deref() {
            Some(AdsSecret::Certificate { uris, .. }) => uris.clone(),
            _ => Vec::new(),
        }
    }
}

/// A server certificate named by an ADS secret; no certificate (a failed handshake, as in an
/// Envoy whose listener still warms) until the secret arrives.
#[derive(Debug)]
pub struct AdsCertificate(pub String);

impl ResolvesServerCert for AdsCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        ads_secrets().certificate(&self.0)
    }
}

impl rustls::client::ResolvesClientCert for AdsCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        ads_secrets().certificate(&self.0)
    }

    fn has_certs(&self) -> bool {
        true
    }
}
