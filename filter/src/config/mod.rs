//! The plugin configuration: its JSON shape (serde, `deny_unknown_fields`) and the
//! validated, compiled form the filter runs on.
//!
//! Envoy hands the JSON to `on_configure`; [`Config::from_json`] either returns a
//! [`Config`] that the request path can use without further checks, or a
//! [`ConfigError`] that names the offending field (`routes[0].targets[1].weight: …`).
//! Envoy then rejects the configuration and the previous one keeps serving.
//!
//! `filter/config.schema.json` describes the same shape for editors and CI; a test keeps
//! the two in agreement over every example configuration in the repository.

use crate::bucket;
use crate::pattern::MethodPattern;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;

/// The plugin configuration as written by the user.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Header naming the A/B group (a target name) explicitly.
    #[serde(default = "default_group_header")]
    pub group_header: String,
    /// Header whose value is hashed into a sticky bucket when no group is given.
    #[serde(default = "default_user_key_header")]
    pub user_key_header: String,
    /// Internal request header that carries the chosen cluster to Envoy's
    /// `cluster_header` route. Any value a client sends is overwritten or removed.
    #[serde(default = "default_cluster_header")]
    pub cluster_header: String,
    /// Whether to add the decision (`target=…; reason=…`) to responses.
    #[serde(default)]
    pub expose_decision: bool,
    /// Response header carrying the decision when `expose_decision` is on.
    #[serde(default = "default_decision_header")]
    pub decision_header: String,
    /// What to do with requests that are not gRPC.
    #[serde(default)]
    pub non_grpc: NonGrpc,
    /// Method-level access control, applied to every gRPC request.
    #[serde(default)]
    pub access: AccessConfig,
    /// Routes, tried in order; the first whose `match` covers the method wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Prefix of every stat the filter defines.
    #[serde(default = "default_stat_prefix")]
    pub stat_prefix: String,
}

/// Handling of requests whose `content-type` is not `application/grpc…`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonGrpc {
    /// Let them through untouched (only a spoofed internal header is removed).
    #[default]
    Pass,
    /// Answer `415 Unsupported Media Type` locally.
    Reject,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// If non-empty, only methods matching one of these patterns are allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Methods matching any of these patterns are denied (deny wins over allow).
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in stats and logs.
    pub name: String,
    /// Method patterns this route covers.
    #[serde(rename = "match")]
    pub methods: Vec<String>,
    /// The route's targets: a name, the Envoy cluster behind it and a weight.
    pub targets: Vec<TargetConfig>,
    /// Target used when a request names no group and carries no user key.
    pub default_target: String,
    /// Salt for sticky bucketing; defaults to the route name. Changing it reshuffles
    /// every user, which is how a new experiment gets independent buckets.
    #[serde(default)]
    pub hash_salt: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub cluster: String,
    /// Relative share of sticky-bucketed users; 0 means reachable by group header only.
    #[serde(default)]
    pub weight: u32,
}

fn default_group_header() -> String {
    "x-ab-group".into()
}
fn default_user_key_header() -> String {
    "x-user-id".into()
}
fn default_cluster_header() -> String {
    "x-switchyard-cluster".into()
}
fn default_decision_header() -> String {
    "x-switchyard-decision".into()
}
fn default_stat_prefix() -> String {
    "switchyard".into()
}

/// Upper bound on a single weight, so sums never overflow and typos stand out.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A configuration error: where (a JSON path such as `routes[0].default_target`) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// The validated configuration the filter runs on.
#[derive(Debug)]
pub struct Config {
    pub headers: HeaderNames,
    pub non_grpc: NonGrpc,
    pub access: Access,
    pub routes: Vec<Route>,
    pub stat_prefix: String,
}

/// Lower-cased header names (HTTP/2 header names are lower case on the wire).
#[derive(Debug)]
pub struct HeaderNames {
    pub group: String,
    pub user_key: String,
    pub cluster: String,
    /// `Some` when the decision is exposed on responses.
    pub decision: Option<String>,
}

#[derive(Debug, Default)]
pub struct Access {
    pub allow: Vec<MethodPattern>,
    pub deny: Vec<MethodPattern>,
}

impl Access {
    /// Whether a gRPC method (`:path`) may pass. Deny wins; an empty allow list allows all.
    pub fn permits(&self, path: &str) -> bool {
        if self.deny.iter().any(|p| p.matches(path)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|p| p.matches(path))
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub methods: Vec<MethodPattern>,
    pub targets: Vec<Target>,
    /// Index into `targets`.
    pub default_target: usize,
}

impl Route {
    pub fn covers(&self, path: &str) -> bool {
        self.methods.iter().any(|p| p.matches(path))
    }

    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.name == name)
    }
}

#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub cluster: String,
    pub weight: u32,
    /// This target's bucketing seed under the route's salt (see [`bucket`]).
    pub seed: u64,
}

impl Config {
    /// Parses and validates the plugin configuration. Empty input means all defaults.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: PluginConfig = if json.iter().all(u8::is_ascii_whitespace) {
            PluginConfig::default_values()
        } else {
            let de = &mut serde_json::Deserializer::from_slice(json);
            serde_path_to_error::deserialize(de)
                .map_err(|e| err(e.path().to_string(), e.inner().to_string()))?
        };
        raw.validate()
    }
}

impl PluginConfig {
    /// The configuration with every field at its default (what `{}` means).
    pub fn default_values() -> Self {
        Self {
            group_header: default_group_header(),
            user_key_header: default_user_key_header(),
            cluster_header: default_cluster_header(),
            expose_decision: false,
            decision_header: default_decision_header(),
            non_grpc: NonGrpc::Pass,
            access: AccessConfig::default(),
            routes: Vec::new(),
            stat_prefix: default_stat_prefix(),
        }
    }

    /// Checks every field and compiles patterns and seeds.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let group = header_name("group_header", &self.group_header)?;
        let user_key = header_name("user_key_header", &self.user_key_header)?;
        let cluster = header_name("cluster_header", &self.cluster_header)?;
        let decision = header_name("decision_header", &self.decision_header)?;
        if cluster == group || cluster == user_key {
            return Err(err(
                "cluster_header",
                format!("{cluster:?} is also used as the group or user-key header"),
            ));
        }
        if !self
            .stat_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || self.stat_prefix.is_empty()
        {
            return Err(err(
                "stat_prefix",
                format!("{:?} must be non-empty [A-Za-z0-9_.]", self.stat_prefix),
            ));
        }
        let access = Access {
            allow: patterns("access.allow", &self.access.allow)?,
            deny: patterns("access.deny", &self.access.deny)?,
        };
        let mut names = HashSet::new();
        let routes = self
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let route = r.validate(&format!("routes[{i}]"))?;
                if !names.insert(route.name.clone()) {
                    return Err(err(
                        format!("routes[{i}].name"),
                        format!("duplicate route name {:?}", route.name),
                    ));
                }
                Ok(route)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            headers: HeaderNames {
                group,
                user_key,
                cluster,
                decision: self.expose_decision.then_some(decision),
            },
            non_grpc: self.non_grpc,
            access,
            routes,
            stat_prefix: self.stat_prefix,
        })
    }
}

impl RouteConfig {
    fn validate(self, at: &str) -> Result<Route, ConfigError> {
        stat_name(&format!("{at}.name"), &self.name)?;
        if self.methods.is_empty() {
            return Err(err(format!("{at}.match"), "needs at least one method pattern"));
        }
        let methods = patterns(&format!("{at}.match"), &self.methods)?;
        if self.targets.is_empty() {
            return Err(err(format!("{at}.targets"), "needs at least one target"));
        }
        let salt = self.hash_salt.unwrap_or_else(|| self.name.clone());
        let mut targets: Vec<Target> = Vec::with_capacity(self.targets.len());
        for (j, t) in self.targets.into_iter().enumerate() {
            let tat = format!("{at}.targets[{j}]");
            stat_name(&format!("{tat}.name"), &t.name)?;
            if targets.iter().any(|o| o.name == t.name) {
                return Err(err(format!("{tat}.name"), format!("duplicate target name {:?}", t.name)));
            }
            if t.cluster.trim().is_empty() || t.cluster.chars().any(char::is_whitespace) {
                return Err(err(
                    format!("{tat}.cluster"),
                    format!("{:?} is not an Envoy cluster name", t.cluster),
                ));
            }
            if t.weight > MAX_WEIGHT {
                return Err(err(
                    format!("{tat}.weight"),
                    format!("{} is over the maximum of {MAX_WEIGHT}", t.weight),
                ));
            }
            targets.push(Target {
                seed: bucket::target_seed(&salt, &t.name),
                name: t.name,
                cluster: t.cluster,
                weight: t.weight,
            });
        }
        let default_target = targets
            .iter()
            .position(|t| t.name == self.default_target)
            .ok_or_else(|| {
                let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                err(
                    format!("{at}.default_target"),
                    format!(
                        "{:?} is not a target of this route (targets: {})",
                        self.default_target,
                        known.join(", ")
                    ),
                )
            })?;
        Ok(Route {
            name: self.name,
            methods,
            targets,
            default_target,
        })
    }
}

fn header_name(at: &str, name: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(err(at, format!("{name:?} is not a valid HTTP header name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// Names that become part of stat names: keep them to characters Envoy keeps verbatim.
fn stat_name(at: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(err(at, format!("{name:?} must be 1-64 characters of [A-Za-z0-9_-]")))
    }
}

fn patterns(at: &str, sources: &[String]) -> Result<Vec<MethodPattern>, ConfigError> {
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| MethodPattern::parse(s).map_err(|m| err(format!("{at}[{i}]"), m)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        Config::from_json(json.as_bytes()).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"{
        "routes": [{
            "name": "features",
            "match": ["/features.v1.FeatureExtractionService/*"],
            "targets": [
                {"name": "stable", "cluster": "stable", "weight": 90},
                {"name": "canary", "cluster": "canary", "weight": 10}
            ],
            "default_target": "stable"
        }]
    }"#;

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.headers.group, "x-ab-group");
        assert_eq!(c.headers.user_key, "x-user-id");
        assert_eq!(c.headers.cluster, "x-switchyard-cluster");
        assert_eq!(c.headers.decision, None);
        assert_eq!(c.stat_prefix, "switchyard");
        assert!(parse("{}").unwrap().routes.is_empty());
    }

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.routes[0].default_target, 0);
        assert!(c.routes[0].covers("/features.v1.FeatureExtractionService/ExtractRealtime"));
    }

    #[test]
    fn header_names_are_lowercased() {
        let c = parse(r#"{"group_header": "X-Group", "expose_decision": true}"#).unwrap();
        assert_eq!(c.headers.group, "x-group");
        assert_eq!(c.headers.decision.as_deref(), Some("x-switchyard-decision"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"routes": [{"name": "r", "match": ["/a/*"], "targets": [{"name": "s", "cluster": "c", "wieght": 1}], "default_target": "s"}]}"#,
             "routes[0].targets[0].wieght: unknown field `wieght`"),
            (r#"{"routes": [{"name": "r", "match": ["/a/*"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "x"}]}"#,
             "routes[0].default_target: \"x\" is not a target of this route (targets: s)"),
            (r#"{"routes": [{"name": "r", "match": ["a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s"}]}"#,
             "routes[0].match[0]: method pattern"),
            (r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "weight": -1}], "default_target": "s"}]}"#,
             "routes[0].targets[0].weight: invalid value: integer `-1`"),
            (r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "weight": 2000000}], "default_target": "s"}]}"#,
             "routes[0].targets[0].weight: 2000000 is over the maximum"),
            (r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}, {"name": "s", "cluster": "d"}], "default_target": "s"}]}"#,
             "routes[0].targets[1].name: duplicate target name"),
            (r#"{"routes": [{"name": "r r", "match": ["/a"], "targets": [], "default_target": "s"}]}"#,
             "routes[0].name: \"r r\" must be"),
            (r#"{"routes": [{"name": "r", "match": [], "targets": [], "default_target": "s"}]}"#,
             "routes[0].match: needs at least one"),
            (r#"{"group_header": "bad header"}"#, "group_header: \"bad header\" is not a valid HTTP header name"),
            (r#"{"cluster_header": "x-ab-group"}"#, "cluster_header: \"x-ab-group\" is also used"),
            (r#"{"non_grpc": "drop"}"#, "non_grpc: unknown variant `drop`"),
            (r#"{"access": {"deny": ["nope"]}}"#, "access.deny[0]: method pattern"),
            (r#"{"routes": 3}"#, "routes: invalid type: integer `3`, expected a sequence"),
            ("{\"routes\": [", "EOF while parsing"),
        ];
        for (json, want) in cases {
            let got = parse(json).unwrap_err();
            assert!(got.contains(want), "for {json}\n  got:  {got}\n  want: {want}");
        }
    }

    #[test]
    fn access_deny_wins_and_empty_allow_allows_all() {
        let c = parse(r#"{"access": {"allow": ["/a.S/*"], "deny": ["/a.S/Admin*"]}}"#).unwrap();
        assert!(c.access.permits("/a.S/Get"));
        assert!(!c.access.permits("/a.S/AdminReset"));
        assert!(!c.access.permits("/b.S/Get"));
        let open = parse("{}").unwrap();
        assert!(open.access.permits("/anything/Goes"));
    }
}
