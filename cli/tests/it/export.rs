//! `comb export`: the manifests validate against Kubernetes' schemas in strict mode, hold
//! the promised properties, match the topology's calls, and are the same bytes every time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use comb::topology::Topology;
use serde_json::Value;

use crate::observability::which;
use crate::{repo_topology, text};

fn export(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_comb"))
        .arg("export")
        .args(args)
        .arg("--config")
        .arg(repo_topology())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "comb export failed: {}",
        text(&output)
    );
    output
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// Every YAML document of every manifest file (not the kustomization).
fn documents(files: &BTreeMap<String, Vec<u8>>) -> Vec<Value> {
    let mut documents = Vec::new();
    for (name, bytes) in files {
        if name == "kustomization.yaml" {
            continue;
        }
        let text = std::str::from_utf8(bytes).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|error| panic!("{name} is not YAML: {error}"));
            documents.push(value);
        }
    }
    documents
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    documents
        .iter()
        .find(|document| document["kind"] == kind && document["metadata"]["name"] == name)
}

/// Strict offline validation with the `kubernetes-validate` package; off CI it may be
/// missing (then the test says so and checks the rest).
fn validate_strictly(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let Some(validator) = which("kubernetes-validate") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubernetes-validate is required on CI (.ci/run installs it with pip)"
        );
        eprintln!(
            "not validating against Kubernetes' schemas: no kubernetes-validate on PATH (pip install kubernetes-validate)"
        );
        return;
    };
    let manifests: Vec<&String> = files
        .keys()
        .filter(|name| *name != "kustomization.yaml")
        .collect();
    let output = Command::new(validator)
        .args(["--strict", "--quiet", "--kubernetes-version", "1.37.0"])
        .args(manifests)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the manifests do not validate: {}",
        text(&output)
    );
}

#[test]
fn kubernetes_manifests_validate_and_keep_their_promises() {
    let out = tempfile::tempdir().unwrap();
    export(&["k8s", "--out", &out.path().display().to_string()]);
    let files = files(out.path());
    validate_strictly(out.path(), &files);
    let documents = documents(&files);
    let topology = Topology::load(&repo_topology()).unwrap();

    // The kustomization lists every manifest written.
    let kustomization: Value = serde_yaml_ng::from_slice(&files["kustomization.yaml"]).unwrap();
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|resource| resource.as_str().unwrap())
        .collect();
    let written: BTreeSet<&str> = files
        .keys()
        .map(String::as_str)
        .filter(|name| *name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, written);
    assert_eq!(kustomization["namespace"], "comb");
    let claim =
        find(&documents, "PersistentVolumeClaim", "comb-media-blobs").expect("media's claim");
    assert_eq!(
        claim["spec"]["accessModes"],
        serde_json::json!(["ReadWriteMany"])
    );

    for (service, spec) in &topology.services {
        let deployment = find(&documents, "Deployment", service)
            .unwrap_or_else(|| panic!("no Deployment for {service}"));
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let image = container["image"].as_str().unwrap();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "{service}: a pinned image, not {image}"
        );
        assert_eq!(container["args"], serde_json::json!(["serve", service]));
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][bound][resource].is_string(),
                    "{service}: {bound}.{resource} set"
                );
            }
        }
        // Media and its workers share one claim on media's files.
        let mounts_media = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|mount| mount["name"] == "media-blobs");
        assert_eq!(mounts_media, service.starts_with("media"), "{service}");
        if service == "media-worker" {
            assert!(
                image.contains("comb-media-worker:"),
                "the worker's image has ffmpeg: {image}"
            );
        }
        let security = &container["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{service}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{service}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{service}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{service}");
        assert_ne!(pod["securityContext"]["runAsUser"], 0, "{service}");
        // The kit drains for drain_timeout_ms (10 s by default) after SIGTERM.
        assert!(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 10,
            "{service}: time to drain"
        );
        let config_sources: Vec<&Value> = container["envFrom"].as_array().unwrap().iter().collect();
        assert!(
            config_sources
                .iter()
                .any(|source| source["configMapRef"]["name"] == "comb-settings")
        );
        assert!(
            config_sources
                .iter()
                .any(|source| source["secretRef"]["name"] == format!("comb-{service}"))
        );
        let secret = find(&documents, "Secret", &format!("comb-{service}")).unwrap();
        let database = &secret["stringData"]["COMB_DATABASE_URL"];
        if service == "gateway" || service == "media-worker" {
            assert!(database.is_null(), "{service} keeps no data: {database}");
        } else {
            assert!(
                database
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("postgres://comb_{service}:")),
                "{service} connects as its own role"
            );
        }
        assert!(
            find(&documents, "Service", service).is_some(),
            "{service}: Service"
        );

        // The autoscaler and the disruption budget follow the topology.
        let max = spec.max_replicas.unwrap_or(spec.replicas);
        let hpa = find(&documents, "HorizontalPodAutoscaler", service);
        assert_eq!(hpa.is_some(), max > spec.replicas, "{service}: HPA");
        if let Some(hpa) = hpa {
            assert_eq!(hpa["spec"]["maxReplicas"], max);
            assert_eq!(hpa["spec"]["minReplicas"], spec.replicas);
        }
        assert_eq!(
            find(&documents, "PodDisruptionBudget", service).is_some(),
            max > 1,
            "{service}: PDB for a replicated service"
        );

        // Only the topology's callers may reach the service (the gateway: anyone).
        let policy = find(&documents, "NetworkPolicy", service)
            .unwrap_or_else(|| panic!("no NetworkPolicy for {service}"));
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            service.as_str()
        );
        let rules = policy["spec"]["ingress"].as_array().unwrap();
        let allowed: BTreeSet<String> = rules
            .iter()
            .flat_map(|rule| rule["from"].as_array().cloned().unwrap_or_default())
            .filter_map(|peer| {
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        let callers: BTreeSet<String> = topology
            .services
            .iter()
            .filter(|(_, caller)| caller.calls.contains(service))
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(allowed, callers, "{service}: callers admitted");
        let open_to_all = rules.iter().any(|rule| rule.get("from").is_none());
        assert_eq!(
            open_to_all,
            service == "gateway",
            "{service}: only the edge is open"
        );
        // The admin port (metrics) is Prometheus's alone, and no Service exposes it.
        for rule in rules {
            let ports: Vec<u64> = rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|port| port["port"].as_u64().unwrap())
                .collect();
            let from_monitoring = rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                == "monitoring";
            assert_eq!(
                ports,
                [if from_monitoring { 9090 } else { 8080 }],
                "{service}: {rule}"
            );
        }
        let template = &find(&documents, "Deployment", service).unwrap()["spec"]["template"];
        assert_eq!(
            template["metadata"]["annotations"]["prometheus.io/port"],
            "9090"
        );
        let container_ports = &template["spec"]["containers"][0]["ports"];
        assert_eq!(container_ports[1]["name"], "metrics", "{service}");
        assert_eq!(container_ports[1]["containerPort"], 9090, "{service}");
        let exposed = &find(&documents, "Service", service).unwrap()["spec"]["ports"];
        assert_eq!(exposed.as_array().unwrap().len(), 1, "{service}: {exposed}");
        assert_eq!(exposed[0]["port"], 8080, "{service}");
    }
    let namespace = find(&documents, "Namespace", "comb").unwrap();
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    for backing in ["postgres", "nats"] {
        let statefulset = find(&documents, "StatefulSet", backing)
            .unwrap_or_else(|| panic!("no {backing} StatefulSet"));
        assert_eq!(
            statefulset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
    }
    let init = find(&documents, "Secret", "comb-postgres-init").unwrap();
    let script = init["stringData"]["init.sql"].as_str().unwrap();
    for service in topology.services.keys() {
        let revoked = format!(
            "REVOKE ALL ON DATABASE \"comb_{}\" FROM PUBLIC",
            service.replace('-', "_")
        );
        let keeps_data = service != "gateway" && service != "media-worker";
        assert_eq!(script.contains(&revoked), keeps_data, "{service}");
    }
}

#[test]
fn external_backing_points_at_the_given_servers() {
    let out = tempfile::tempdir().unwrap();
    export(&[
        "k8s",
        "--out",
        &out.path().display().to_string(),
        "--backing",
        "external",
        "--postgres-host",
        "db.internal.example",
        "--nats-host",
        "nats.internal.example",
        "--namespace",
        "shop",
        "--image",
        "registry.example/comb:1.2.3",
    ]);
    let files = files(out.path());
    validate_strictly(out.path(), &files);
    let documents = documents(&files);
    assert!(find(&documents, "StatefulSet", "postgres").is_none());
    let postgres = find(&documents, "Service", "postgres").unwrap();
    assert_eq!(postgres["spec"]["type"], "ExternalName");
    assert_eq!(postgres["spec"]["externalName"], "db.internal.example");
    assert_eq!(
        find(&documents, "Service", "nats").unwrap()["spec"]["externalName"],
        "nats.internal.example"
    );
    let gateway = find(&documents, "Deployment", "gateway").unwrap();
    assert_eq!(gateway["metadata"]["namespace"], "shop");
    assert_eq!(
        gateway["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/comb:1.2.3"
    );
}

#[test]
fn unpinned_images_and_missing_servers_are_refused() {
    for args in [
        &["k8s", "--image", "comb:latest"][..],
        &["k8s", "--image", "registry.example/comb"][..],
        &["k8s", "--backing", "external"][..],
        &["compose", "--image", "comb"][..],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_comb"))
            .arg("export")
            .args(args)
            .args(["--out", "/nonexistent/never-written"])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} was accepted");
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(
            message.contains("pin a version") || message.contains("--postgres-host"),
            "{args:?}: {message}"
        );
    }
}

#[test]
fn the_same_topology_exports_the_same_bytes() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&first, &second] {
        export(&["k8s", "--out", &dir.path().display().to_string()]);
    }
    let (a, b) = (files(first.path()), files(second.path()));
    assert!(!a.is_empty());
    assert_eq!(a, b, "two exports differ");
    assert_eq!(export(&["compose"]).stdout, export(&["compose"]).stdout);
}

#[test]
fn the_compose_file_lists_every_service_with_its_dependencies() {
    let output = export(&["compose"]);
    let file: Value = serde_yaml_ng::from_slice(&output.stdout).unwrap();
    let topology = Topology::load(&repo_topology()).unwrap();
    let services = file["services"].as_object().unwrap();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    let mut expected: BTreeSet<&str> = topology.services.keys().map(String::as_str).collect();
    expected.extend(["postgres", "nats"]);
    assert_eq!(names, expected);
    for (service, spec) in &topology.services {
        let definition = &services[service];
        assert_eq!(definition["command"], serde_json::json!(["serve", service]));
        assert_eq!(
            definition["depends_on"]["postgres"]["condition"],
            "service_healthy"
        );
        assert!(definition["depends_on"]["nats"].is_object());
        assert_eq!(
            definition["x-calls"],
            serde_json::json!(spec.calls),
            "{service}"
        );
        for callee in &spec.calls {
            let variable = format!("COMB_UPSTREAM_{}", callee.to_uppercase());
            assert_eq!(
                definition["environment"][&variable],
                format!("http://{callee}:8080"),
                "{service} reaches {callee}"
            );
        }
        let database = &definition["environment"]["COMB_DATABASE_URL"];
        if service == "gateway" || service == "media-worker" {
            assert!(database.is_null(), "{service} keeps no data");
        } else {
            assert!(
                database
                    .as_str()
                    .unwrap()
                    .contains(&format!("comb_{service}"))
            );
        }
        assert_eq!(definition["read_only"], true);
    }
    assert_eq!(services["gateway"]["ports"][0], "8080:8080");
    let init = file["configs"]["postgres-init"]["content"]
        .as_str()
        .unwrap();
    assert!(init.contains("DO $$$$"), "`$` escaped for compose: {init}");
}

/// The image recipe pins what it builds from and runs as a numeric non-root user with no
/// shell; the build context leaves out what the build does not read.
#[test]
fn the_image_recipe_is_pinned_and_runs_as_non_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        3,
        "a build stage, the media worker's (with ffmpeg) and the runtime stage"
    );
    assert!(stages[1].ends_with(" AS media-worker"), "{stages:?}");
    let worker =
        &dockerfile[dockerfile.find(stages[1]).unwrap()..dockerfile.rfind("FROM ").unwrap()];
    assert!(
        worker.contains("ffmpeg") && worker.contains("USER 65532:65532"),
        "{worker}"
    );
    for stage in &stages {
        let image = stage.split_whitespace().next().unwrap();
        let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest", "{image} is pinned");
    }
    assert!(
        stages[2].starts_with("gcr.io/distroless/"),
        "no shell at run time"
    );
    let runtime = &dockerfile[dockerfile.rfind("FROM ").unwrap()..];
    let user = runtime
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the runtime stage names its user");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric user");
    assert_ne!(uid, 0);
    assert!(runtime.contains("ENTRYPOINT [\"/usr/local/bin/comb\"]"));
    let ignored = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignored
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert!(ignored.contains(&"target/") && ignored.contains(&".git/"));
    for needed in [
        "Cargo.lock",
        "comb.toml",
        "cli/",
        "kit/",
        "contracts/",
        "services/",
        "testkit/",
    ] {
        assert!(
            !ignored
                .iter()
                .any(|pattern| pattern.trim_end_matches('/') == needed.trim_end_matches('/')),
            "{needed} is needed by the build"
        );
    }
}
