//! Locality load balancing as istiod applies it (`pilot/pkg/networking/core/loadbalancer`): per
//! proxy, endpoints get priorities by how close they are to the proxy (failover) or their
//! localities get weights (`distribute`). Failover needs outlier detection, as in Istio, since
//! only ejection moves traffic to the next priority; `enabled: false` on the rule turns it all
//! off; without a rule, the service's `trafficDistribution` (failover by topology labels, with
//! or without outlier detection), else the mesh's setting (on by default).

use weft_api::types::destination_rule::LocalityLbSetting;
use weft_registry::{Endpoint, TrafficDistribution};

/// What locality balancing does for one proxy and one cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Endpoints by priority: `failoverPriority` labels first, then proximity.
    Failover {
        /// The proxy's `region/zone/subzone`.
        proxy: [String; 3],
        /// `failover` rules, `from` region → `to` region.
        rules: Vec<(String, String)>,
        /// `failoverPriority`: label, and the value to compare with (the proxy's own by default).
        priority_labels: Vec<(String, String)>,
        /// Proximity priorities apply (no `failoverPriority`, or explicit `failover` rules with it).
        proximity: bool,
    },
    /// `distribute`: each locality's weight, from the first entry whose `from` fits the proxy.
    Distribute { to: Vec<(String, u32)> },
}

impl Plan {
    /// Whether the cluster needs `locality_weighted_lb_config` (istiod sets it for `distribute`
    /// and for explicit failover settings, not for the default proximity failover).
    pub fn weighted(&self) -> bool {
        match self {
            Plan::Distribute { .. } => true,
            Plan::Failover {
                rules,
                priority_labels,
                ..
            } => !rules.is_empty() || !priority_labels.is_empty(),
        }
    }
}

fn split(l: &str) -> [String; 3] {
    let mut parts = l.splitn(3, '/').map(str::to_string);
    [
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    ]
}

/// Istio's `LocalityMatch`: the rule's region is `*` or equal; a missing or `*` zone or subzone
/// matches any.
fn matches(locality: &[String; 3], rule: &str) -> bool {
    let r = split(rule);
    let part = |i: usize, any_if_empty: bool| {
        r[i] == "*" || (any_if_empty && r[i].is_empty()) || r[i] == locality[i]
    };
    part(0, false) && part(1, true) && part(2, true)
}

/// The failover istiod's `GetLocalityLbSetting` writes for a service's `trafficDistribution`:
/// same network, region and zone first (and subzone and node for `PreferSameNode`).
fn preferred(distribution: TrafficDistribution) -> Option<LocalityLbSetting> {
    let mut labels = vec![
        "topology.istio.io/network",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    match distribution {
        TrafficDistribution::Any => return None,
        TrafficDistribution::PreferSameZone => {}
        TrafficDistribution::PreferSameNode => {
            labels.extend(["topology.istio.io/subzone", "kubernetes.io/hostname"]);
        }
    }
    Some(LocalityLbSetting {
        failover_priority: labels.into_iter().map(str::to_string).collect(),
        enabled: Some(true),
        ..Default::default()
    })
}

/// The plan for a proxy at `proxy_locality` with labels `proxy_labels`: the rule's setting
/// (`rule`, from the DestinationRule's merged load balancer), else the one the service's
/// `distribution` implies, else the mesh's; failover only with `outlier_detection`, except for
/// the service's preference, which istiod applies without it.
pub fn plan(
    rule: Option<&LocalityLbSetting>,
    distribution: TrafficDistribution,
    mesh: &LocalityLbSetting,
    outlier_detection: bool,
    proxy_locality: Option<&str>,
    proxy_labels: &weft_api::types::common::Labels,
) -> Option<Plan> {
    let from_service = preferred(distribution);
    let (setting, outlier_detection) = match (rule, &from_service) {
        (Some(r), _) if r.enabled == Some(false) => return None,
        (Some(r), _) => (r, outlier_detection),
        (None, Some(s)) => (s, true),
        (None, None) if mesh.enabled == Some(false) => return None,
        (None, None) => (mesh, outlier_detection),
    };
    let proxy = split(proxy_locality?);
    if let Some(d) = setting
        .distribute
        .iter()
        .find(|d| matches(&proxy, d.from.as_deref().unwrap_or("")))
    {
        let to =
            d.to.iter()
                .map(|(l, w)| (l.clone(), u32::try_from(*w).unwrap_or(0)))
                .collect();
        return Some(Plan::Distribute { to });
    }
    if !outlier_detection {
        return None;
    }
    let priority_labels: Vec<(String, String)> = setting
        .failover_priority
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (
                entry.clone(),
                own_label(entry, &proxy, proxy_labels).unwrap_or_default(),
            ),
        })
        .collect();
    let rules: Vec<(String, String)> = setting
        .failover
        .iter()
        .map(|f| {
            (
                f.from.clone().unwrap_or_default(),
                f.to.clone().unwrap_or_default(),
            )
        })
        .collect();
    Some(Plan::Failover {
        proximity: priority_labels.is_empty() || !rules.is_empty(),
        proxy,
        rules,
        priority_labels,
    })
}

/// A workload's label as istiod augments it: the topology labels come from its locality.
fn own_label(
    key: &str,
    locality: &[String; 3],
    labels: &weft_api::types::common::Labels,
) -> Option<String> {
    let from_locality = match key {
        "topology.kubernetes.io/region" => Some(&locality[0]),
        "topology.kubernetes.io/zone" => Some(&locality[1]),
        "topology.istio.io/subzone" => Some(&locality[2]),
        _ => None,
    };
    labels
        .get(key)
        .cloned()
        .or_else(|| from_locality.filter(|v| !v.is_empty()).cloned())
}

impl Plan {
    /// An endpoint's priority before compaction (`None`: it gets no traffic).
    pub fn priority(&self, e: &Endpoint) -> Option<u32> {
        let Plan::Failover {
            proxy,
            rules,
            priority_labels,
            proximity,
        } = self
        else {
            return Some(0);
        };
        let here = split(e.locality.as_deref().unwrap_or(""));
        let mut priority = 0u32;
        if !priority_labels.is_empty() {
            let n = u32::try_from(priority_labels.len()).unwrap_or(u32::MAX);
            for (j, (key, want)) in priority_labels.iter().enumerate() {
                let mut have = own_label(key, &here, &e.labels).unwrap_or_default();
                if key == "topology.istio.io/network" && have.is_empty() {
                    have = e.network.clone().unwrap_or_default();
                }
                if &have != want {
                    priority = n - u32::try_from(j).unwrap_or(0);
                    break;
                }
            }
        }
        if *proximity {
            // Istio's LbPriority, then the `failover` rules for other regions.
            let mut near = if proxy[0] != here[0] {
                3
            } else if proxy[1] != here[1] {
                2
            } else if proxy[2] != here[2] {
                1
            } else {
                0
            };
            if near == 3
                && let Some((_, to)) = rules.iter().find(|(from, _)| *from == proxy[0])
                && *to != here[0]
            {
                near = 4;
            }
            priority = priority * 5 + near;
        }
        Some(priority)
    }

    /// A locality's weight under `distribute` (`None`: it gets no traffic), given the weight
    /// of each locality's endpoints: a `to` entry's weight is shared among the localities it
    /// names by their own weights, rounded up, as istiod does.
    pub fn weights(&self, localities: &[(String, u32)]) -> Vec<Option<u32>> {
        let Plan::Distribute { to } = self else {
            return localities.iter().map(|(_, w)| Some(*w)).collect();
        };
        let mut out: Vec<Option<u32>> = vec![None; localities.len()];
        let mut claimed = vec![false; localities.len()];
        for (rule, weight) in to {
            let members: Vec<usize> = (0..localities.len())
                .filter(|i| !claimed[*i] && matches(&split(&localities[*i].0), rule))
                .collect();
            let total: u64 = members.iter().map(|i| u64::from(localities[*i].1)).sum();
            for i in members {
                claimed[i] = true;
                let own = u64::from(localities[i].1);
                let share = (own * u64::from(*weight)).div_ceil(total.max(1));
                out[i] = Some(if share > 0 {
                    u32::try_from(share).unwrap_or(u32::MAX)
                } else {
                    localities[i].1
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::types::common::Labels;

    fn endpoint(locality: &str, labels: &[(&str, &str)]) -> Endpoint {
        weft_registry::Endpoint {
            address: "10.0.0.1".into(),
            service_port: 80,
            port: 80,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            locality: Some(locality.to_string()),
            weight: 1,
            service_account: None,
            network: None,
            ready: true,
            origin: weft_registry::Origin {
                kind: "WorkloadEntry",
                namespace: "default".into(),
                name: "x".into(),
            },
            application: None,
        }
    }

    fn setting(yaml: &str) -> LocalityLbSetting {
        serde_json::from_str(yaml).unwrap()
    }

    #[test]
    fn proximity_and_failover_rules_give_istiods_priorities() {
        let on = setting(r#"{"enabled": true}"#);
        let p = plan(
            None,
            TrafficDistribution::Any,
            &on,
            true,
            Some("r1/z1/s1"),
            &Labels::new(),
        )
        .unwrap();
        assert!(!p.weighted(), "the default failover sets priorities only");
        let prio = |l: &str| p.priority(&endpoint(l, &[])).unwrap();
        assert_eq!(
            [
                prio("r1/z1/s1"),
                prio("r1/z1/s2"),
                prio("r1/z2/s1"),
                prio("r2/z1/s1")
            ],
            [0, 1, 2, 3]
        );
        // No outlier detection: no failover at all.
        assert_eq!(
            plan(
                None,
                TrafficDistribution::Any,
                &on,
                false,
                Some("r1/z1/s1"),
                &Labels::new()
            ),
            None
        );
        // A rule turning it off wins over the mesh.
        let off = setting(r#"{"enabled": false}"#);
        assert_eq!(
            plan(
                Some(&off),
                TrafficDistribution::Any,
                &on,
                true,
                Some("r1/z1/s1"),
                &Labels::new()
            ),
            None
        );
        // failover from r1 to r3: r3 stays 3, any other region drops to 4.
        let rules = setting(r#"{"failover": [{"from": "r1", "to": "r3"}]}"#);
        let p = plan(
            Some(&rules),
            TrafficDistribution::Any,
            &on,
            true,
            Some("r1/z1/s1"),
            &Labels::new(),
        )
        .unwrap();
        assert!(p.weighted());
        assert_eq!(p.priority(&endpoint("r3/z/s", &[])), Some(3));
        assert_eq!(p.priority(&endpoint("r2/z/s", &[])), Some(4));
    }

    #[test]
    fn failover_priority_ranks_by_the_first_label_that_differs() {
        let s = setting(
            r#"{"failoverPriority": ["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "tier=gold"]}"#,
        );
        let p = plan(
            Some(&s),
            TrafficDistribution::Any,
            &s,
            true,
            Some("r1/z1/"),
            &Labels::new(),
        )
        .unwrap();
        let prio = |l: &str, labels: &[(&str, &str)]| p.priority(&endpoint(l, labels)).unwrap();
        assert_eq!(prio("r1/z1/", &[("tier", "gold")]), 0);
        assert_eq!(prio("r1/z1/", &[("tier", "silver")]), 1);
        assert_eq!(prio("r1/z2/", &[("tier", "gold")]), 2);
        assert_eq!(prio("r2/z1/", &[("tier", "gold")]), 3);
    }

    #[test]
    fn distribute_shares_each_entry_by_locality_weight_and_drops_the_rest() {
        let s =
            setting(r#"{"distribute": [{"from": "r1/z1/*", "to": {"r1/z1/*": 70, "r2/*": 30}}]}"#);
        let p = plan(
            Some(&s),
            TrafficDistribution::Any,
            &s,
            false,
            Some("r1/z1/s1"),
            &Labels::new(),
        )
        .unwrap();
        assert!(p.weighted());
        let w = p.weights(&[
            ("r1/z1/s1".into(), 2),
            ("r2/z1/s1".into(), 1),
            ("r2/z2/s1".into(), 2),
            ("r3/z1/s1".into(), 1),
        ]);
        assert_eq!(w, vec![Some(70), Some(10), Some(20), None]);
        // A proxy elsewhere: this entry is not for it, and without outlier detection nothing.
        assert_eq!(
            plan(
                Some(&s),
                TrafficDistribution::Any,
                &s,
                false,
                Some("r9/z/s"),
                &Labels::new()
            ),
            None
        );
    }

    #[test]
    fn a_services_traffic_distribution_fails_over_by_zone_without_outlier_detection() {
        let on = LocalityLbSetting::default();
        let p = plan(
            None,
            TrafficDistribution::PreferSameZone,
            &on,
            false,
            Some("r1/z1/s1"),
            &Labels::new(),
        )
        .unwrap();
        assert!(p.weighted());
        let prio = |l: &str| p.priority(&endpoint(l, &[]));
        assert_eq!(prio("r1/z1/s1"), Some(0));
        assert_eq!(prio("r1/z1/s2"), Some(0), "subzone is not compared");
        assert_eq!(prio("r1/z2/s1"), Some(1));
        assert_eq!(prio("r2/z1/s1"), Some(2));
        let node = plan(
            None,
            TrafficDistribution::PreferSameNode,
            &on,
            false,
            Some("r1/z1/s1"),
            &Labels::from([("kubernetes.io/hostname".to_string(), "n1".to_string())]),
        )
        .unwrap();
        let host = |l: &str, h: &str| node.priority(&endpoint(l, &[("kubernetes.io/hostname", h)]));
        assert_eq!(host("r1/z1/s1", "n1"), Some(0));
        assert_eq!(host("r1/z1/s1", "n2"), Some(1));
        assert_eq!(host("r1/z1/s2", "n1"), Some(2));
        // A DestinationRule's setting wins over the service's preference, and `enabled: false`
        // turns both off.
        let off = LocalityLbSetting {
            enabled: Some(false),
            ..Default::default()
        };
        assert_eq!(
            plan(
                Some(&off),
                TrafficDistribution::PreferSameZone,
                &on,
                false,
                Some("r1/z1/s1"),
                &Labels::new()
            ),
            None
        );
        assert_eq!(
            plan(
                Some(&on),
                TrafficDistribution::PreferSameZone,
                &on,
                false,
                Some("r1/z1/s1"),
                &Labels::new()
            ),
            None,
            "the rule's default failover needs outlier detection"
        );
    }
}
