//! Warming, as Envoy does it: a listener from LDS starts serving only once every route table it
//! names has arrived, and an EDS cluster from CDS only once its load assignment has. Until
//! then the version it replaces (if any) keeps serving, so that an update never opens a window
//! of 404s or 503s. A subscription that stays silent past its `initial_fetch_timeout` stops
//! holding the resource back.

use crate::cluster::{Cluster, Discovery};
use crate::http::RouteSource;
use crate::listener::{Listener, NetworkFilter};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a warming resource waits for, and until when.
pub(super) struct Wait {
    /// Some missing resource is still within its fetch timeout.
    pub waiting: bool,
    /// The earliest time a missing resource's timeout runs out.
    pub deadline: Option<Instant>,
}

impl Wait {
    fn none() -> Wait {
        Wait {
            waiting: false,
            deadline: None,
        }
    }

    fn missing(&mut self, since: Instant, timeout: Option<Duration>, now: Instant) {
        match timeout {
            // No limit: it waits for as long as it takes.
            None => self.waiting = true,
            Some(t) => {
                let until = since + t;
                if until > now {
                    self.waiting = true;
                    self.deadline = Some(self.deadline.map_or(until, |d| d.min(until)));
                }
            }
        }
    }
}

/// A listener waits for the route tables its connection managers name over RDS.
pub(super) fn listener<T>(
    l: &Listener,
    routes: &BTreeMap<String, T>,
    since: Instant,
    now: Instant,
) -> Wait {
    let mut wait = Wait::none();
    for chain in &l.filter_chains {
        if let NetworkFilter::Http(hcm) = &chain.filter
            && let RouteSource::Rds {
                name,
                initial_fetch_timeout,
            } = &hcm.route
            && !routes.contains_key(name)
        {
            wait.missing(since, *initial_fetch_timeout, now);
        }
    }
    wait
}

/// An EDS cluster waits for its load assignment.
pub(super) fn cluster<T>(
    c: &Cluster,
    endpoints: &BTreeMap<String, T>,
    since: Instant,
    now: Instant,
) -> Wait {
    let mut wait = Wait::none();
    if c.config.discovery == Discovery::Eds && !endpoints.contains_key(&c.config.eds_service_name) {
        wait.missing(since, c.config.eds_initial_fetch_timeout, now);
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_resource_holds_back_until_its_timeout() {
        let since = Instant::now();
        let t = Duration::from_secs(15);
        let mut early = Wait::none();
        early.missing(since, Some(t), since + Duration::from_secs(3));
        assert!(early.waiting);
        assert_eq!(early.deadline, Some(since + t));

        let mut late = Wait::none();
        late.missing(since, Some(t), since + t);
        assert!(!late.waiting, "at its timeout it stops waiting");
        assert_eq!(late.deadline, None);

        // Two missing resources: the earlier deadline is the one to wake up for.
        let mut two = Wait::none();
        two.missing(since, Some(t), since);
        two.missing(since, Some(Duration::from_secs(2)), since);
        assert_eq!(two.deadline, Some(since + Duration::from_secs(2)));

        // initial_fetch_timeout 0: no limit, and nothing to wake up for.
        let mut forever = Wait::none();
        forever.missing(since, None, since + Duration::from_secs(3600));
        assert!(forever.waiting);
        assert_eq!(forever.deadline, None);
    }
}
