//! The sidecar's snapshot, as the filter polls it, and the per-worker view of it that
//! the request path reads.
//!
//! The snapshot is JSON from the sidecar's admin port (`GET /v1/snapshot`): the schema
//! registry's subjects, revisions and compatibility pairs, plus the health of each model
//! version. [`SidecarSnapshot`] (in `switchyard-api`) is the one definition of that
//! document: the sidecar serialises that very type.
//!
//! A worker parses a snapshot once per generation into a [`SnapshotView`], which resolves
//! every target's served revision and health up front, so a request only does a
//! revision lookup and a binary search over compatibility pairs.

use crate::config::Config;
pub use switchyard_api::SidecarSnapshot;

/// A client's or target's revision, resolved in the registry: `(subject, revision)`.
pub type Revision = (String, u32);

/// What one target is, according to the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetFacts {
    /// The revision it serves, if declared (config or sidecar) and known to the registry.
    pub serves: Option<Revision>,
    /// Whether it declares a revision the registry does not know (then it can serve no one).
    pub unknown_revision: bool,
    /// The sidecar reports its model version unhealthy (or does not know it).
    pub unhealthy: bool,
}

/// A snapshot resolved against one configuration.
#[derive(Debug, Default)]
pub struct SnapshotView {
    pub snapshot: SidecarSnapshot,
    /// `[route][target]`.
    pub targets: Vec<Vec<TargetFacts>>,
}

impl SnapshotView {
    /// Resolves every target of `config`. Returns the view and one line per problem worth
    /// logging (once per generation, not per request).
    pub fn build(snapshot: SidecarSnapshot, config: &Config) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let targets = config
            .routes
            .iter()
            .map(|route| {
                route
                    .targets
                    .iter()
                    .map(|t| {
                        let model = t.model_version.as_ref().map(|m| (m, snapshot.models.get(m)));
                        let declared = t
                            .revision
                            .clone()
                            .or_else(|| model.and_then(|(_, h)| h.and_then(|h| h.revision.clone())));
                        let serves = declared.as_deref().and_then(|d| {
                            snapshot.schema.resolve(d).map(|(s, r)| (s.to_owned(), r))
                        });
                        let unknown_revision = declared.is_some() && serves.is_none();
                        if unknown_revision {
                            problems.push(format!(
                                "route {} target {} declares schema revision {:?}, which the registry does not know; it will serve no client that declares a revision",
                                route.name,
                                t.name,
                                declared.unwrap_or_default()
                            ));
                        }
                        let unhealthy = match model {
                            None => false,
                            Some((name, None)) => {
                                problems.push(format!(
                                    "route {} target {}: the sidecar does not serve model version {name:?}",
                                    route.name, t.name
                                ));
                                true
                            }
                            Some((_, Some(h))) => !h.healthy,
                        };
                        TargetFacts { serves, unknown_revision, unhealthy }
                    })
                    .collect()
            })
            .collect();
        (Self { snapshot, targets }, problems)
    }

    pub fn generation(&self) -> u64 {
        self.snapshot.generation
    }

    pub fn facts(&self, route: usize, target: usize) -> Option<&TargetFacts> {
        self.targets.get(route)?.get(target)
    }

    /// Resolves a client's declared revision (`features.v1@3`, a fingerprint).
    pub fn client_revision(&self, declared: &str) -> Option<(&str, u32)> {
        self.snapshot.schema.resolve(declared)
    }

    /// Whether a target can serve a client on `client`: the server reads the client's
    /// requests and the client reads the server's responses. A target that declares no
    /// revision is not constrained.
    pub fn can_serve(&self, route: usize, target: usize, client: (&str, u32)) -> bool {
        let Some(facts) = self.facts(route, target) else {
            return false;
        };
        match &facts.serves {
            None => !facts.unknown_revision,
            Some((subject, server)) => {
                subject == client.0
                    && self
                        .snapshot
                        .schema
                        .verdict(subject, client.1, *server)
                        .is_some_and(|v| v.is_compatible())
            }
        }
    }

    /// How a target's revision reads in messages (`features.v1@2`, or `any`).
    pub fn served_label(&self, route: usize, target: usize) -> String {
        match self.facts(route, target) {
            Some(TargetFacts { serves: Some((s, r)), .. }) => format!("{s}@{r}"),
            Some(TargetFacts { unknown_revision: true, .. }) => "unknown".into(),
            _ => "any".into(),
        }
    }
}

/// Test data shared with the routing tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) fn snapshot_json() -> String {
        serde_json::json!({
            "generation": 3,
            "schema": {"generation": 2, "subjects": {"features.v1": {
                "current": 3, "mode": "BACKWARD", "category": "WIRE",
                "revisions": [
                    {"revision": 1, "fingerprint": format!("sha256:{}", "1".repeat(64))},
                    {"revision": 2, "fingerprint": format!("sha256:{}", "2".repeat(64))},
                    {"revision": 3, "fingerprint": format!("sha256:{}", "3".repeat(64))}
                ],
                "pairs": [
                    {"client": 1, "server": 2, "requests": true, "responses": true},
                    {"client": 1, "server": 3, "requests": false, "responses": true},
                    {"client": 2, "server": 1, "requests": true, "responses": false},
                    {"client": 2, "server": 3, "requests": true, "responses": true},
                    {"client": 3, "server": 1, "requests": false, "responses": false},
                    {"client": 3, "server": 2, "requests": true, "responses": true}
                ]
            }}},
            "models": {"orientation/1": {"healthy": true}, "orientation/2": {"healthy": false, "revision": "features.v1@3"}}
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::snapshot_json;
    use super::*;

    fn config() -> Config {
        Config::from_json(
            br#"{"sidecar": {"cluster": "sc"}, "routes": [{"name": "r", "match": ["*"], "default_target": "stable",
                "targets": [
                    {"name": "stable", "cluster": "a", "revision": "features.v1@1", "model_version": "orientation/1"},
                    {"name": "canary", "cluster": "b", "model_version": "orientation/2"},
                    {"name": "free", "cluster": "c"},
                    {"name": "ghost", "cluster": "d", "revision": "features.v1@9", "model_version": "orientation/9"}
                ]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn resolves_targets_and_reports_problems_once() {
        let snap: SidecarSnapshot = serde_json::from_str(&snapshot_json()).unwrap();
        let (view, problems) = SnapshotView::build(snap, &config());
        assert_eq!(view.facts(0, 0).unwrap().serves, Some(("features.v1".into(), 1)));
        // Learned from the sidecar.
        assert_eq!(view.facts(0, 1).unwrap().serves, Some(("features.v1".into(), 3)));
        assert!(view.facts(0, 1).unwrap().unhealthy);
        assert_eq!(view.facts(0, 2).unwrap(), &TargetFacts::default());
        assert!(view.facts(0, 3).unwrap().unknown_revision);
        assert!(view.facts(0, 3).unwrap().unhealthy);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn compatibility_needs_both_directions() {
        let snap: SidecarSnapshot = serde_json::from_str(&snapshot_json()).unwrap();
        let (view, _) = SnapshotView::build(snap, &config());
        let client = |d: &str| {
            let (s, r) = view.client_revision(d).unwrap();
            (s.to_owned(), r)
        };
        let c1 = client("features.v1@1");
        let c3 = client(&format!("features.v1@sha256:{}", "3".repeat(64)));
        assert!(view.can_serve(0, 0, (&c1.0, c1.1)), "same revision");
        assert!(!view.can_serve(0, 1, (&c1.0, c1.1)), "server 3 cannot read client 1's requests");
        assert!(!view.can_serve(0, 0, (&c3.0, c3.1)));
        assert!(view.can_serve(0, 1, (&c3.0, c3.1)));
        assert!(view.can_serve(0, 2, (&c3.0, c3.1)), "a target without a revision is unconstrained");
        assert!(!view.can_serve(0, 3, (&c3.0, c3.1)), "an unknown served revision serves no one");
        assert!(view.client_revision("features.v1@7").is_none());
        assert_eq!(view.served_label(0, 0), "features.v1@1");
    }
}
