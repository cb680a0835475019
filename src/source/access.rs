//! Before kproxy touches the kernel, it asks the API server whether its
//! identity may read what it programs from: a kproxy that can never list
//! EndpointSlices would otherwise start, take over the node's rules and
//! then sit there with no endpoints. Each missing permission is named, with
//! the identity, so the fix (deploy/clusterrole.yaml) is obvious.
//!
//! The answer comes from SelfSubjectAccessReview, which every authenticated
//! identity may create (system:basic-user). An API server that cannot be
//! reached at start is not a reason to refuse: the node may need kproxy to
//! reach it, and the watchers keep retrying.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

/// One permission: verb, API group ("" for core), resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{} {}", self.verb, self.resource)
        } else {
            write!(f, "{} {}.{}", self.verb, self.resource, self.group)
        }
    }
}

const fn p(verb: &'static str, group: &'static str, resource: &'static str) -> Permission {
    Permission {
        verb,
        group,
        resource,
    }
}

/// What the watchers and the event recorder use, cluster-wide.
pub const NEEDED: [Permission; 7] = [
    p("list", "", "services"),
    p("watch", "", "services"),
    p("list", "discovery.k8s.io", "endpointslices"),
    p("watch", "discovery.k8s.io", "endpointslices"),
    p("list", "", "nodes"),
    p("watch", "", "nodes"),
    p("create", "events.k8s.io", "events"),
];

/// The outcome of the check.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// Every permission is granted.
    Granted,
    /// These are denied to this identity.
    Denied {
        identity: String,
        missing: Vec<Permission>,
    },
    /// The API server could not answer (unreachable, too slow, or it does
    /// not serve the review API): nothing is known.
    Unknown(String),
}

/// How long the check may take before kproxy starts anyway.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Ask the API server about every permission in `NEEDED`.
pub async fn check(client: &kube::Client) -> Access {
    match tokio::time::timeout(CHECK_TIMEOUT, ask(client)).await {
        Ok(Ok(access)) => access,
        Ok(Err(e)) => Access::Unknown(e.to_string()),
        Err(_) => Access::Unknown(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    }
}

async fn ask(client: &kube::Client) -> Result<Access, kube::Error> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for perm in NEEDED {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(perm.verb.into()),
                    group: Some(perm.group.into()),
                    resource: Some(perm.resource.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(perm);
        }
    }
    if missing.is_empty() {
        return Ok(Access::Granted);
    }
    Ok(Access::Denied {
        identity: identity(client).await,
        missing,
    })
}

/// The user name the API server authenticated us as, for the message.
async fn identity(client: &kube::Client) -> String {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = SelfSubjectReview::default();
    match reviews.create(&PostParams::default(), &review).await {
        Ok(r) => r
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .unwrap_or_else(|| "an unnamed identity".into()),
        Err(_) => "this identity".into(),
    }
}

impl Access {
    /// The refusal to start, if any, as one readable message.
    pub fn refusal(&self) -> Option<String> {
        let Access::Denied { identity, missing } = self else {
            return None;
        };
        let list: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
        Some(format!(
            "the API server denies {identity:?} permission to {} (cluster-wide); \
             grant it with a ClusterRole like deploy/clusterrole.yaml",
            list.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_identity_and_every_missing_permission() {
        let a = Access::Denied {
            identity: "system:serviceaccount:kube-system:kproxy".into(),
            missing: vec![NEEDED[3], NEEDED[6]],
        };
        let msg = a.refusal().unwrap();
        assert!(
            msg.contains("system:serviceaccount:kube-system:kproxy"),
            "{msg}"
        );
        assert!(
            msg.contains("watch endpointslices.discovery.k8s.io, create events.events.k8s.io"),
            "{msg}"
        );
        assert_eq!(Access::Granted.refusal(), None);
        assert_eq!(Access::Unknown("down".into()).refusal(), None);
    }
}
