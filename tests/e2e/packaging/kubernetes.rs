//! `packaging/kubernetes/sidecar.yaml`, parsed as YAML (every document): the fields that
//! decide whether the sidecar works — image, probes, resources, the token's Secret, the
//! WAL's volume and the app's log volume.

use gapless::config::units::parse_size;
use yaml_rust2::{Yaml, YamlLoader};

use super::{read, required_variables};

/// A Kubernetes binary quantity (`2Gi`, `512Mi`) in bytes.
fn quantity_bytes(q: &str) -> u64 {
    parse_size(&format!("{q}B"))
        .unwrap_or_else(|e| panic!("{q:?} is not a binary quantity (Ki, Mi, Gi, Ti): {e}"))
}

/// The one document of `kind` named `name`, if the manifest holds it.
fn named<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> Option<&'a Yaml> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn list<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list: {y:?}"))
}

fn string<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{what} is not set: {y:?}"))
}

#[test]
fn kubernetes_sidecar_runs_gapless_with_probes_limits_a_secret_token_a_persistent_wal_and_the_app_logs_read_only(
) {
    let docs = YamlLoader::load_from_str(&read("kubernetes/sidecar.yaml"))
        .unwrap_or_else(|e| panic!("kubernetes/sidecar.yaml is not YAML: {e}"));
    for d in &docs {
        string(&d["apiVersion"], "a document's apiVersion");
        string(&d["kind"], "a document's kind");
    }
    let pods: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Pod"))
        .collect();
    assert_eq!(pods.len(), 1, "one Pod in sidecar.yaml");
    let spec = &pods[0]["spec"];
    let containers = list(&spec["containers"], "spec.containers");
    let gapless = containers
        .iter()
        .find(|c| {
            c["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("gapless"))
        })
        .expect("a container whose image is gapless*");

    // Probes on the API port (named or numbered).
    let port_of = |probe: &Yaml, what: &str| -> i64 {
        let port = &probe["httpGet"]["port"];
        if let Some(n) = port.as_i64() {
            return n;
        }
        let name = string(port, &format!("{what}.httpGet.port"));
        list(&gapless["ports"], "gapless ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("{what} names port {name:?}, which gapless does not declare"))
    };
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
        let p = &gapless[probe];
        assert_eq!(p["httpGet"]["path"].as_str(), Some(path), "{probe}: {p:?}");
        assert_eq!(port_of(p, probe), 8686, "{probe} is not on the API port");
    }

    let resources = &gapless["resources"];
    for key in ["requests", "limits"] {
        assert!(
            resources[key].as_hash().is_some_and(|h| !h.is_empty()),
            "resources.{key} is not set: {resources:?}"
        );
    }
    string(&resources["limits"]["memory"], "resources.limits.memory");
    string(
        &resources["requests"]["memory"],
        "resources.requests.memory",
    );

    // Environment: the token from a Secret, and every variable the image's config needs.
    let env = list(&gapless["env"], "gapless env");
    let var = |name: &str| env.iter().find(|e| e["name"].as_str() == Some(name));
    let token = var("GAPLESS_TOKEN").expect("GAPLESS_TOKEN in gapless's env");
    let secret_ref = &token["valueFrom"]["secretKeyRef"];
    let secret = string(&secret_ref["name"], "GAPLESS_TOKEN's secretKeyRef.name");
    let key = string(&secret_ref["key"], "GAPLESS_TOKEN's secretKeyRef.key");
    if let Some(s) = named(&docs, "Secret", secret) {
        assert!(
            !s["stringData"][key].is_badvalue() || !s["data"][key].is_badvalue(),
            "Secret {secret} has no key {key}: {s:?}"
        );
    }
    for v in required_variables(&read("container/gapless.toml")) {
        assert!(
            var(&v).is_some(),
            "the image's config needs {v}, which the sidecar does not set"
        );
    }

    let mounts = list(&gapless["volumeMounts"], "gapless volumeMounts");
    let volume = |name: &str| {
        list(&spec["volumes"], "spec.volumes")
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name} in the pod"))
    };

    // The WAL on a PersistentVolumeClaim, large enough for wal.max_bytes.
    let wal = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/var/lib/gapless"))
        .expect("a volume mounted at /var/lib/gapless");
    assert_ne!(
        wal["readOnly"].as_bool(),
        Some(true),
        "the WAL mount is read-only"
    );
    let wal_volume = volume(string(&wal["name"], "the WAL mount's name"));
    let claim = string(
        &wal_volume["persistentVolumeClaim"]["claimName"],
        "the WAL volume's persistentVolumeClaim.claimName",
    );
    if let (Some(pvc), Some(max)) = (
        named(&docs, "PersistentVolumeClaim", claim),
        var("GAPLESS_MAX_BYTES"),
    ) {
        let storage = quantity_bytes(string(
            &pvc["spec"]["resources"]["requests"]["storage"],
            "the claim's storage request",
        ));
        let max = parse_size(string(&max["value"], "GAPLESS_MAX_BYTES")).unwrap();
        assert!(
            max < storage,
            "wal.max_bytes ({max} B) does not fit the claim {claim} ({storage} B)"
        );
    }

    // The app's log volume: an emptyDir the app writes and gapless reads, read-only, where
    // GAPLESS_INCLUDE looks.
    let include = var("GAPLESS_INCLUDE")
        .map(|v| string(&v["value"], "GAPLESS_INCLUDE").to_string())
        .unwrap_or_else(|| "/var/log/app/*.log".to_string());
    let logs = mounts
        .iter()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|p| include.starts_with(&format!("{}/", p.trim_end_matches('/'))))
        })
        .unwrap_or_else(|| panic!("no volume of gapless holds GAPLESS_INCLUDE {include}"));
    assert_eq!(
        logs["readOnly"].as_bool(),
        Some(true),
        "gapless mounts the app's logs writable: {logs:?}"
    );
    let logs_name = string(&logs["name"], "the log mount's name");
    assert!(
        !volume(logs_name)["emptyDir"].is_badvalue(),
        "the log volume {logs_name} is not an emptyDir"
    );
    let shared = containers.iter().any(|c| {
        c["image"] != gapless["image"]
            && c["volumeMounts"]
                .as_vec()
                .is_some_and(|ms| ms.iter().any(|m| m["name"].as_str() == Some(logs_name)))
    });
    assert!(
        shared,
        "no other container mounts the log volume {logs_name}"
    );
}
